/** One line for each term of the demo's output a reader may not know, in order of appearance. */
export const GLOSSARY: readonly (readonly [term: string, meaning: string])[] = [
  ['kexec', 'kexec: boots a new kernel from the running one, skipping the firmware; RAM survives'],
  [
    'LUO',
    'LUO: the Live Update Orchestrator, which hands files of running processes to the next kernel',
  ],
  ['KHO', 'KHO: Kexec HandOver, which keeps chosen memory and a description of it across a kexec'],
  [
    'agent',
    'agent: the one process that holds LUO sessions for services, which hand it their fds by socket',
  ],
  [
    'luod',
    "luod: the LUO agent's daemon name (here @liveupdate/agent); systemd's fd store can do its job",
  ],
  [
    'memfd',
    'memfd: a file that lives only in RAM (memfd_create); here it holds the cache and guest RAM',
  ],
  ['vfio', 'vfio: gives a process (the VMM) a PCI device to drive directly, as a passthrough NIC'],
  [
    'IOAS',
    "IOAS: an iommufd I/O address space, the map of the guest's RAM the device's DMA goes through",
  ],
  ['HWPT', "HWPT: an iommufd hardware page table, the IOMMU's translation the NIC's DMA uses"],
  ['FLB', "FLB: File-Lifecycle-Bound data, state several preserved files share (the IOMMU's)"],
];

/**
 * Explains each term of {@link GLOSSARY} once, after the first text that names it (`--explain`).
 * Terms are matched as whole words, so `memfd_create` does not count as `memfd`.
 */
export class Glossary {
  readonly #explained = new Set<string>();

  /** The glossary lines for the terms `text` names that were not explained yet. */
  explainNew(text: string): string[] {
    const lines: string[] = [];
    for (const [term, meaning] of GLOSSARY) {
      if (this.#explained.has(term) || !new RegExp(`\\b${term}\\b`).test(text)) continue;
      this.#explained.add(term);
      lines.push(`  ⓘ ${meaning}`);
    }
    return lines;
  }
}
