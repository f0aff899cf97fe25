/** `reboot(2)` commands (`<linux/reboot.h>`). Only kexec is implemented by the simulated kernel. */
export const LINUX_REBOOT_CMD_RESTART = 0x01234567;
export const LINUX_REBOOT_CMD_HALT = 0xcdef0123;
export const LINUX_REBOOT_CMD_POWER_OFF = 0x4321fedc;
/** Reboot into the kernel loaded with `kexec_load`. */
export const LINUX_REBOOT_CMD_KEXEC = 0x45584543;
