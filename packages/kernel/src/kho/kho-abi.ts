/**
 * Names of the KHO root FDT, as the next kernel expects them. Properties are native-endian
 * (little-endian) u64s, as in the kernel; the checksums are u32 cells (big-endian, as
 * `fdtValue.u32` writes them).
 *
 * ```
 * / {
 *     compatible = "kho-v2";
 *     preserved-memory-map = <u64>;   // phys of the first memory map page (kho-memory-map.ts)
 *     preserved-memory-map-crc = <u32>; // v2: crc32c of the map chain's used bytes
 *     scratch-phys = <u64>;           // the scratch area, reused by every later kernel
 *     scratch-len = <u64>;
 *     fdt-crc = <u32>;                // v2: crc32c of this whole blob with these 4 bytes zero
 *     <subtree name> {                // one node per kho_add_subtree()
 *         preserved-data = <u64>;     // phys of the subsystem's blob, which it preserved itself
 *         blob-size = <u64>;
 *         blob-crc = <u32>;           // v2: crc32c of the blob-size bytes at preserved-data
 *     };
 * };
 * ```
 *
 * `kho-v1` is the same without the three checksums; the kernel reads both and writes `kho-v2`
 * unless the loaded kernel reads only `kho-v1`.
 *
 * `scratch-phys`/`scratch-len` stand in for what x86 passes beside the FDT in `struct kho_data`:
 * the next kernel receives only the FDT's address, so the scratch area travels inside it.
 */
export const KHO_FDT_COMPATIBLE = 'kho-v2';
/** The KHO root before checksums: read (with a warning) and written for a kernel that reads only it. */
export const KHO_FDT_COMPATIBLE_V1 = 'kho-v1';
export const KHO_PROP_MEMORY_MAP = 'preserved-memory-map';
export const KHO_PROP_SCRATCH_PHYS = 'scratch-phys';
export const KHO_PROP_SCRATCH_LEN = 'scratch-len';
export const KHO_PROP_PRESERVED_DATA = 'preserved-data';
export const KHO_PROP_BLOB_SIZE = 'blob-size';
/** `kho-v2`: CRC32C of a subtree's blob. */
export const KHO_PROP_BLOB_CRC = 'blob-crc';
/** `kho-v2`: CRC32C of the memory map chain (see `khoMapCrc`). */
export const KHO_PROP_MEMORY_MAP_CRC = 'preserved-memory-map-crc';
/** `kho-v2`: CRC32C of the root FDT's `totalsize` bytes, computed with this value's 4 bytes zero. */
export const KHO_PROP_FDT_CRC = 'fdt-crc';
/**
 * What `kho_add_subtree()` accepts as a subtree name (a node name without a unit address, as
 * subsystems use: `LUO`, `iommu`, `pci`); the next kernel refuses any other node.
 */
export const KHO_SUBTREE_NAME = /^[A-Za-z0-9,._+-]{1,31}$/;
/** The largest root FDT the next kernel accepts. */
export const KHO_FDT_MAX_SIZE = 1024 * 1024;
