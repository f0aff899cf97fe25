import {
  IOMMU_HUGE_PAGE_SIZE,
  KernelError,
  PAGE_SIZE,
  type File,
  type IommuDomain,
  type IommuDriver,
  type IommuProt,
  type PageAllocator,
  type Vfs,
} from '@liveupdate/kernel';
import { IOMMU_IOVA_BITS, hex } from '@liveupdate/machine';
import type { MemfdFolio, MemfdInode, MemfdSegment } from '@liveupdate/plugin-memfd';
import { IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE } from './iommufd-uapi.js';

/** The first IOVA an IOAS can map. */
export const IOAS_IOVA_START = 0;
/** The last IOVA an IOAS can map: the machine's IOMMU translates {@link IOMMU_IOVA_BITS} bits. */
export const IOAS_IOVA_LAST = 2 ** IOMMU_IOVA_BITS - 1;

/**
 * `struct iopt_area`: one mapping of an IOAS, `[iova, iova + length)` onto bytes
 * `[start, start + length)` of a memfd. It holds a reference on the file (so the memfd outlives
 * its fds) and a pin on every folio of the range (so no folio under it is freed) until it is
 * unmapped.
 */
export interface IoptArea {
  readonly iova: number;
  readonly length: number;
  /** The memfd file; the area holds one reference on it. */
  readonly file: File;
  readonly inode: MemfdInode;
  /** Offset of the mapping in the file. */
  readonly start: number;
  /** `IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE` bits. */
  readonly prot: number;
  /**
   * The memfd's seals (`F_SEAL_*`) when it was mapped (upstream's `iopt_pages->seals`): live
   * update requires `F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK` here, so the file could not have
   * shrunk under pinned pages between the mapping and its preservation.
   */
  readonly seals: number;
  /** The folios of the range, each pinned once for this area, in file order. */
  readonly folios: readonly MemfdFolio[];
  /** The RAM under the range, in IOVA order: what each IOMMU domain of the IOAS maps. */
  readonly segments: readonly MemfdSegment[];
}

/** What an IOAS needs of the kernel. */
export interface IoasKernel {
  readonly pages: PageAllocator;
  readonly vfs: Vfs;
  /** The IOMMU driver whose domains the HWPTs of the IOAS own. */
  readonly iommu: IommuDriver;
}

/** What {@link IommufdIoas.mapFile} maps. */
export interface MapFileRequest {
  readonly file: File;
  readonly inode: MemfdInode;
  readonly start: number;
  readonly length: number;
  /** Where to map; `undefined` lets the IOAS pick (`IOMMU_IOAS_MAP_FIXED_IOVA` clear). */
  readonly iova: number | undefined;
  readonly prot: number;
}

/**
 * `struct iommufd_ioas` with its `io_pagetable`: an IO address space, the IOVA → memfd mappings
 * that hardware page tables (HWPTs) follow. Areas never overlap and are kept in IOVA order. Every
 * IOMMU domain added to the IOAS (one per paging HWPT) maps exactly the IOAS's areas: a map
 * reaches all of them or none, an unmap leaves all of them before the pins go.
 *
 * Errors follow `iommufd/io_pagetable.c`: `EINVAL` for unaligned or out-of-range arguments,
 * `EEXIST` for an IOVA range that overlaps an area, `ENOSPC` when no free IOVA range is large
 * enough, `ENOENT` for an unmap that would split an area or hits none.
 */
export class IommufdIoas {
  /** `IOMMUFD_OBJ_IOAS`. */
  readonly type = 'ioas';
  /** The object id in its iommufd. */
  readonly id: number;
  readonly #areas: IoptArea[] = [];
  /** `iopt->domains`: the domains of the HWPTs built on this IOAS, by domain id. */
  readonly #domains = new Map<number, IommuDomain>();
  readonly #kernel: IoasKernel;
  /**
   * `iopt.lu_map_immutable`: set while a HWPT of this IOAS is preserved for a live update, so the
   * preserved domain stays exactly what the IOAS maps: map and unmap fail with `EBUSY`.
   */
  luImmutable = false;

  constructor(id: number, kernel: IoasKernel) {
    this.id = id;
    this.#kernel = kernel;
  }

  /** The mappings, in IOVA order. */
  get areas(): readonly IoptArea[] {
    return this.#areas;
  }

  /**
   * Objects that use this IOAS: its paging HWPTs, one per domain. While non-zero,
   * `IOMMU_DESTROY` of the IOAS is `EBUSY`.
   */
  get users(): number {
    return this.#domains.size;
  }

  /**
   * `iopt_table_add_domain()`: fill `domain` with every area, then keep it in step with the IOAS.
   * All or nothing: on failure the domain is left empty and not added.
   */
  addDomain(domain: IommuDomain): void {
    const mapped: IoptArea[] = [];
    try {
      for (const area of this.#areas) {
        this.#mapArea(domain, area);
        mapped.push(area);
      }
    } catch (error) {
      for (const area of mapped) this.#kernel.iommu.unmap(domain, area.iova, area.length);
      throw error;
    }
    this.#domains.set(domain.id, domain);
  }

  /** `iopt_table_remove_domain()`: unmap every area from `domain` and stop updating it. */
  removeDomain(domain: IommuDomain): void {
    if (!this.#domains.delete(domain.id)) return;
    for (const area of this.#areas) this.#kernel.iommu.unmap(domain, area.iova, area.length);
  }

  /**
   * `iopt_map_file_pages()`: map bytes `[start, start + length)` of a memfd. The caller checked
   * that the range lies within the file. Holes in the range are allocated, every folio of the range
   * is pinned, the range is mapped into every domain of the IOAS with the request's permissions,
   * and the file gets a reference. All or nothing: on failure no domain maps any of it and no
   * folio stays pinned.
   *
   * @returns the IOVA the mapping was placed at
   */
  mapFile(request: MapFileRequest): number {
    const { file, inode, start, length } = request;
    this.#checkMutable();
    if (length === 0 || length % PAGE_SIZE !== 0 || start % PAGE_SIZE !== 0) {
      throw new KernelError(
        'EINVAL',
        `IOAS ${this.id}: start ${hex(start)} and length ${hex(length)} must be page-aligned and the length non-zero`,
      );
    }
    const iova = request.iova === undefined ? this.#allocIova(length) : request.iova;
    if (request.iova !== undefined) this.#checkFixedIova(iova, length);
    const segments = inode.segments(start, length);
    const folios = this.#folios(inode, start, length);
    const area: IoptArea = {
      iova,
      length,
      file,
      inode,
      start,
      prot: request.prot,
      seals: inode.seals,
      folios,
      segments,
    };
    const pinned: MemfdFolio[] = [];
    const mapped: IommuDomain[] = [];
    try {
      for (const entry of folios) {
        this.#kernel.pages.pin(entry.folio);
        pinned.push(entry);
      }
      for (const domain of this.#domains.values()) {
        this.#mapArea(domain, area);
        mapped.push(domain);
      }
    } catch (error) {
      for (const domain of mapped) this.#kernel.iommu.unmap(domain, iova, length);
      for (const entry of pinned) this.#kernel.pages.unpin(entry.folio);
      throw error;
    }
    this.#kernel.vfs.fget(file);
    const at = this.#areas.findIndex((other) => other.iova > iova);
    this.#areas.splice(at < 0 ? this.#areas.length : at, 0, area);
    return iova;
  }

  /**
   * `iopt_unmap_iova()`: unmap every area inside `[first, last]` (inclusive). An area only partly
   * inside, or no area at all, is `ENOENT`, and nothing is unmapped then.
   *
   * @returns the number of bytes unmapped
   */
  async unmapRange(first: number, last: number): Promise<number> {
    this.#checkMutable();
    const hit = this.#areas.filter((a) => a.iova <= last && a.iova + a.length - 1 >= first);
    if (hit.length === 0) {
      throw new KernelError(
        'ENOENT',
        `IOAS ${this.id}: nothing is mapped in ${hex(first)}..${hex(last)}`,
      );
    }
    const partial = hit.find((a) => a.iova < first || a.iova + a.length - 1 > last);
    if (partial) {
      throw new KernelError(
        'ENOENT',
        `IOAS ${this.id}: the mapping at ${hex(partial.iova)}+${hex(partial.length)} is not wholly inside ${hex(first)}..${hex(last)}; mappings cannot be split`,
      );
    }
    return this.#unmapAreas(hit);
  }

  /**
   * `iopt_unmap_all()`: unmap every area; an empty IOAS succeeds with 0.
   *
   * @returns the number of bytes unmapped
   */
  unmapAll(): Promise<number> {
    this.#checkMutable();
    return this.#unmapAreas([...this.#areas]);
  }

  /**
   * Take `areas` out, then for each: unmap it from every domain (the driver invalidates the
   * IOTLB before it returns, so no device reaches its frames any more), drop its pins, and drop
   * its file reference (the last one evicts the memfd, pins gone by then).
   */
  async #unmapAreas(areas: readonly IoptArea[]): Promise<number> {
    for (const area of areas) this.#areas.splice(this.#areas.indexOf(area), 1);
    for (const area of areas) {
      for (const domain of this.#domains.values()) {
        this.#kernel.iommu.unmap(domain, area.iova, area.length);
      }
    }
    let unmapped = 0;
    for (const area of areas) {
      // The memfd refuses to drop a pinned folio (EBUSY), so each is still the file's.
      for (const { folio } of area.folios) this.#kernel.pages.unpin(folio);
      unmapped += area.length;
      await this.#kernel.vfs.fput(area.file);
    }
    return unmapped;
  }

  /**
   * Map `area` into `domain`, segment by segment, with the area's permissions. All or nothing:
   * on failure what was mapped of it is unmapped again.
   */
  #mapArea(domain: IommuDomain, area: IoptArea): void {
    const prot: IommuProt = {
      read: (area.prot & IOMMU_IOAS_MAP_READABLE) !== 0,
      write: (area.prot & IOMMU_IOAS_MAP_WRITEABLE) !== 0,
    };
    let iova = area.iova;
    try {
      for (const segment of area.segments) {
        this.#kernel.iommu.map(domain, iova, segment.phys, segment.length, prot);
        iova += segment.length;
      }
    } catch (error) {
      if (iova > area.iova) this.#kernel.iommu.unmap(domain, area.iova, iova - area.iova);
      throw error;
    }
  }

  /** The folios covering pages of `[start, start + length)`, which are all cached. */
  #folios(inode: MemfdInode, start: number, length: number): MemfdFolio[] {
    const folios: MemfdFolio[] = [];
    const endPage = (start + length) / PAGE_SIZE;
    for (let page = start / PAGE_SIZE; page < endPage;) {
      const hit = inode.lookup(page);
      if (!hit)
        throw new KernelError('EFAULT', `IOAS ${this.id}: page ${page} of the memfd is missing`);
      folios.push(hit);
      page = hit.index + 2 ** hit.folio.order;
    }
    return folios;
  }

  /** `EBUSY` while the IOAS is immutable for a live update. */
  #checkMutable(): void {
    if (this.luImmutable) {
      throw new KernelError(
        'EBUSY',
        `IOAS ${this.id}: a HWPT on it is preserved for live update; its mappings are immutable`,
      );
    }
  }

  #checkFixedIova(iova: number, length: number): void {
    if (iova % PAGE_SIZE !== 0) {
      throw new KernelError('EINVAL', `IOAS ${this.id}: IOVA ${hex(iova)} is not page-aligned`);
    }
    if (iova < IOAS_IOVA_START || iova + length - 1 > IOAS_IOVA_LAST) {
      throw new KernelError(
        'EINVAL',
        `IOAS ${this.id}: ${hex(iova)}+${hex(length)} is outside the allowed IOVAs ${hex(IOAS_IOVA_START)}..${hex(IOAS_IOVA_LAST)}`,
      );
    }
    const other = this.#areas.find((a) => a.iova < iova + length && iova < a.iova + a.length);
    if (other) {
      throw new KernelError(
        'EEXIST',
        `IOAS ${this.id}: ${hex(iova)}+${hex(length)} overlaps the mapping at ${hex(other.iova)}+${hex(other.length)}`,
      );
    }
  }

  /**
   * `iopt_alloc_iova()`: the lowest free IOVA range of `length` bytes, aligned to the largest power
   * of two not above `length`, up to 2 MiB, so the IOMMU can use its large leaves.
   */
  #allocIova(length: number): number {
    let align = PAGE_SIZE;
    while (align * 2 <= Math.min(length, IOMMU_HUGE_PAGE_SIZE)) align *= 2;
    let candidate = IOAS_IOVA_START;
    for (const area of this.#areas) {
      if (candidate + length <= area.iova) break;
      candidate = Math.max(candidate, Math.ceil((area.iova + area.length) / align) * align);
    }
    if (candidate + length - 1 > IOAS_IOVA_LAST) {
      throw new KernelError(
        'ENOSPC',
        `IOAS ${this.id}: no free IOVA range of ${hex(length)} bytes`,
      );
    }
    return candidate;
  }
}
