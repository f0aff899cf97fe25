import { KernelError } from '@liveupdate/kernel';
import { IommufdIoas, type IoasKernel } from './iommufd-ioas.js';

/**
 * `struct iommufd_ctx`: what one open of `/dev/iommu` owns, its objects by id. Ids start at 1 and
 * the lowest free one is reused, as the kernel's `xa_alloc` into an `XA_FLAGS_ALLOC1` xarray does.
 * Only IOAS objects exist so far; HWPTs and devices come with vfio.
 */
export class IommufdContext {
  readonly #objects = new Map<number, IommufdIoas>();
  readonly #kernel: IoasKernel;

  constructor(kernel: IoasKernel) {
    this.#kernel = kernel;
  }

  /** The objects, in id order. */
  get objects(): IommufdIoas[] {
    return [...this.#objects.values()].sort((a, b) => a.id - b.id);
  }

  /** `iommufd_ioas_alloc()`: a new, empty IOAS. */
  allocIoas(): IommufdIoas {
    let id = 1;
    while (this.#objects.has(id)) id++;
    const ioas = new IommufdIoas(id, this.#kernel);
    this.#objects.set(id, ioas);
    return ioas;
  }

  /** `iommufd_get_ioas()`: the IOAS with `id`, else `ENOENT`. */
  getIoas(id: number): IommufdIoas {
    const ioas = this.#objects.get(id);
    if (!ioas) throw new KernelError('ENOENT', `iommufd: no IOAS with id ${id}`);
    return ioas;
  }

  /**
   * `iommufd_object_destroy_user()`: destroy the object `id`. `ENOENT` when there is none, `EBUSY`
   * while another object uses it. An IOAS is unmapped first, its pins and file references dropped.
   */
  async destroy(id: number): Promise<void> {
    const ioas = this.#objects.get(id);
    if (!ioas) throw new KernelError('ENOENT', `iommufd: no object with id ${id}`);
    if (ioas.users > 0) {
      throw new KernelError(
        'EBUSY',
        `iommufd: object ${id} is used by ${ioas.users} other objects`,
      );
    }
    this.#objects.delete(id);
    await ioas.unmapAll();
  }

  /**
   * `iommufd_fops_release()`: the file is gone; destroy every object, users before the objects
   * they use (newest first: an object only uses older ones), each IOAS unmapped.
   */
  async release(): Promise<void> {
    for (const ioas of this.objects.reverse()) {
      this.#objects.delete(ioas.id);
      await ioas.unmapAll();
    }
  }
}
