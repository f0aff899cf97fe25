import type { KernelImage } from '@liveupdate/machine';
import { LUO_V1_MODULE, MEMFD_V2_MODULE, hostKernelImage } from './host-kernel-image.js';

/** One kernel of the demo's chain: booted first, or live-updated to. */
export interface ChainKernel {
  readonly version: string;
  readonly image: KernelImage;
  /** How it differs from the others, for the printout. */
  readonly build: string;
}

/** `--scenario same`: 6.18.0 → 6.18.1 → … → 6.18.`updates`, every one the same build. */
export function sameKernelChain(updates: number): ChainKernel[] {
  return Array.from({ length: updates + 1 }, (_, n) => {
    const version = `6.18.${n}`;
    return { version, image: hostKernelImage(version), build: 'the host build' };
  });
}

/** The kernel `--scenario skew` tries last, built without the vfio-pci module. */
export const NO_VFIO_VERSION = '6.19.0-novfio';

/**
 * `--scenario skew`: kernels built from different modules. 6.18.0 has the LUO core and the memfd
 * plugin as they shipped then (only `luo-v1`, only `memfd-v2`); 6.19.0 and 6.19.1 have today's
 * (`luo-v2` and `memfd-v3`, reading the older ones too, and writing them for a kernel that reads
 * nothing newer); 6.19.0 → 6.19.1 is the step that writes the new formats; then back to the very
 * same 6.18.0 image (the rollback); last a kernel without vfio-pci, which cannot take the VM's NIC.
 */
export function skewKernelChain(): ChainKernel[] {
  const old: ChainKernel = {
    version: '6.18.0',
    image: hostKernelImage('6.18.0', { luo: LUO_V1_MODULE, memfd: MEMFD_V2_MODULE }),
    build: `${LUO_V1_MODULE}, ${MEMFD_V2_MODULE}`,
  };
  return [
    old,
    { version: '6.19.0', image: hostKernelImage('6.19.0'), build: 'LUO and memfd of today' },
    { version: '6.19.1', image: hostKernelImage('6.19.1'), build: 'LUO and memfd of today' },
    old,
    {
      version: NO_VFIO_VERSION,
      image: hostKernelImage(NO_VFIO_VERSION, { vfio: false }),
      build: 'built without vfio-pci',
    },
  ];
}
