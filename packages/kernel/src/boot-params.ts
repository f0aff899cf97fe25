/** Everything a kernel receives from the machine besides RAM: nothing more crosses a kexec. */
export interface BootParams {
  readonly version: string;
  readonly cmdline: string;
  /** Physical address of the KHO root FDT, or `null` on a cold boot. */
  readonly khoFdtPhys: number | null;
}
