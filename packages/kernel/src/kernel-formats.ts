import { IOMMU_LU_COMPATIBLE, IOMMU_LU_SUBTREE } from './drivers/iommu-handover.js';
import { PCI_LU_COMPATIBLE, PCI_LU_SUBTREE } from './drivers/pci-handover.js';
import { KEXEC_HISTORY_COMPATIBLE } from './history/kexec-history-abi.js';
import { KHO_FDT_COMPATIBLE, KHO_FDT_COMPATIBLE_V1 } from './kho/kho-abi.js';
import { KERNEL_NOTE_OWNER, handoverReadsNote, type KernelNote } from './kexec-notes.js';
import type { KexecCheck } from './kexec-target.js';

/**
 * The handover formats the kernel itself writes and reads, outside any module: the KHO root, and
 * the KHO subtrees of its IOMMU and PCI drivers (subtree name → format).
 */
export const KERNEL_SUBTREE_FORMATS: ReadonlyMap<string, string> = new Map([
  [IOMMU_LU_SUBTREE, IOMMU_LU_COMPATIBLE],
  [PCI_LU_SUBTREE, PCI_LU_COMPATIBLE],
]);

/** The kernel's own note: it reads `kho-v2`, `kho-v1`, its drivers' formats and its kexec history. */
export function kernelOwnNote(): KernelNote {
  return handoverReadsNote(KERNEL_NOTE_OWNER, [
    KHO_FDT_COMPATIBLE,
    KHO_FDT_COMPATIBLE_V1,
    ...KERNEL_SUBTREE_FORMATS.values(),
    KEXEC_HISTORY_COMPATIBLE,
  ]);
}

/**
 * The kernel's own check before a kexec: the KHO root when KHO hands anything over (a subtree or
 * a preserved folio), and each driver subtree published now (the IOMMU's and the PCI bus's).
 * LUO's subtree is written only at reboot; LUO's own check covers it.
 */
export function kernelFormatsCheck(kho: {
  readonly enabled: boolean;
  readonly stats: { readonly preservedFolios: number };
  subtreeNames(): readonly string[];
}): KexecCheck {
  return {
    name: 'kernel',
    check(target) {
      if (!kho.enabled) return [];
      const problems: string[] = [];
      const subtrees = kho.subtreeNames();
      if (subtrees.length === 0 && kho.stats.preservedFolios === 0) return [];
      // Whether its command line turns KHO on is LUO's check: a kernel may kexec into one that
      // drops a bare KHO handover on purpose, as upstream allows.
      // finalize writes kho-v1 for a kernel that reads only that one.
      if (!target.reads.has(KHO_FDT_COMPATIBLE) && !target.reads.has(KHO_FDT_COMPATIBLE_V1)) {
        problems.push(`the KHO root (${KHO_FDT_COMPATIBLE} or ${KHO_FDT_COMPATIBLE_V1})`);
      }
      for (const name of subtrees) {
        const format = KERNEL_SUBTREE_FORMATS.get(name);
        if (format !== undefined && !target.reads.has(format)) {
          problems.push(`the KHO subtree "${name}" (${format})`);
        }
      }
      return problems;
    },
  };
}
