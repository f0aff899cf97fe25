/**
 * Names of the KHO root FDT (`kho-v1`), as the next kernel expects them. Properties are
 * native-endian (little-endian) u64s, as in the kernel.
 *
 * ```
 * / {
 *     compatible = "kho-v1";
 *     preserved-memory-map = <u64>;   // phys of the first memory map page (kho-memory-map.ts)
 *     scratch-phys = <u64>;           // the scratch area, reused by every later kernel
 *     scratch-len = <u64>;
 *     <subtree name> {                // one node per kho_add_subtree()
 *         preserved-data = <u64>;     // phys of the subsystem's blob, which it preserved itself
 *         blob-size = <u64>;
 *     };
 * };
 * ```
 *
 * `scratch-phys`/`scratch-len` stand in for what x86 passes beside the FDT in `struct kho_data`:
 * the next kernel receives only the FDT's address, so the scratch area travels inside it.
 */
export const KHO_FDT_COMPATIBLE = 'kho-v1';
export const KHO_PROP_MEMORY_MAP = 'preserved-memory-map';
export const KHO_PROP_SCRATCH_PHYS = 'scratch-phys';
export const KHO_PROP_SCRATCH_LEN = 'scratch-len';
export const KHO_PROP_PRESERVED_DATA = 'preserved-data';
export const KHO_PROP_BLOB_SIZE = 'blob-size';
/**
 * What `kho_add_subtree()` accepts as a subtree name (a node name without a unit address, as
 * subsystems use: `LUO`, `iommu`, `pci`); the next kernel refuses any other node.
 */
export const KHO_SUBTREE_NAME = /^[A-Za-z0-9,._+-]{1,31}$/;
/** The largest root FDT the next kernel accepts. */
export const KHO_FDT_MAX_SIZE = 1024 * 1024;
