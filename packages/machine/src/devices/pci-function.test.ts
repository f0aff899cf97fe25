import { describe, expect, it } from 'vitest';
import {
  PCI_BASE_ADDRESS_0,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_VENDOR_ID,
  PciFunction,
  formatBdf,
  parseBdf,
} from './pci-function.js';

const identity = { vendor: 0x8086, device: 0x100e, classCode: 0x020000, bar0Address: 0xfe000000 };

describe('PCI function', () => {
  it('parses and prints bus/device/function addresses like Linux', () => {
    expect(parseBdf('00:03.0')).toBe(0x18);
    expect(parseBdf('0000:01:1f.7')).toBe(0x1ff);
    expect(formatBdf(0x18)).toBe('0000:00:03.0');
    expect(() => parseBdf('00:20.0')).toThrow(RangeError);
  });

  it('reports its identity in read-only config fields', () => {
    const fn = PciFunction.create(0x18, identity);
    fn.writeConfig16(PCI_VENDOR_ID, 0x1234);
    expect([fn.vendor, fn.device, fn.classCode]).toEqual([0x8086, 0x100e, 0x020000]);
    expect(fn.readConfig32(PCI_BASE_ADDRESS_0)).toBe(0xfe000000);
  });

  it('changes only the writable command bits', () => {
    const fn = PciFunction.create(0x18, identity);
    fn.writeConfig16(PCI_COMMAND, 0xffff);
    expect(fn.command).toBe(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
    expect(fn.busMaster && fn.memoryDecode).toBe(true);
  });

  it('issues no DMA without bus master enable', () => {
    const fn = PciFunction.create(0x18, identity);
    expect(fn.beginDma()).toBe(false);
    fn.writeConfig16(PCI_COMMAND, PCI_COMMAND_MASTER);
    expect(fn.beginDma()).toBe(true);
    fn.endDma();
  });

  it('returns config and registers to power-on state on a function-level reset', () => {
    const fn = PciFunction.create(0x18, identity);
    fn.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    fn.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    fn.writeRegister(0x10, 42);
    const generation = fn.resetGeneration;
    fn.writeConfig16(PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_BCR_FLR);
    expect(fn.command).toBe(0);
    expect(fn.interruptsEnabled).toBe(false);
    expect(fn.readRegister(0x10)).toBe(0);
    expect(fn.readConfig16(PCI_EXP_DEVCTL)).toBe(0);
    expect(fn.resetGeneration).toBe(generation + 1);
    expect(fn.vendor).toBe(0x8086);
  });

  it('delivers an interrupt only while MSI-X is enabled and not masked', () => {
    const fn = PciFunction.create(0x18, identity);
    expect(fn.raiseInterrupt()).toBe(false);
    expect(fn.interruptMessage).toBe(0);
    fn.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    expect(fn.raiseInterrupt()).toBe(false);
    fn.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    expect(fn.raiseInterrupt()).toBe(true);
    expect(fn.raiseInterrupt()).toBe(true);
    expect(fn.interruptMessage).toBe(2);
  });

  it('keeps the interrupt message word across a function-level reset, with MSI-X disabled', () => {
    const fn = PciFunction.create(0x18, identity);
    fn.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    fn.raiseInterrupt();
    fn.raiseInterrupt();
    fn.functionLevelReset();
    // A kernel that saw 2 before the reset must compute 0 new interrupts, not a wrapped count.
    expect(fn.interruptMessage).toBe(2);
    expect(fn.raiseInterrupt()).toBe(false);
    fn.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    fn.raiseInterrupt();
    expect((fn.interruptMessage - 2) >>> 0).toBe(1);
  });

  it('wakes an asynchronous waiter when an interrupt is delivered, and not before', async () => {
    const fn = PciFunction.create(0x18, identity);
    fn.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    let woken = false;
    const waiting = fn.waitForInterrupt(fn.interruptMessage).then(() => {
      woken = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(woken).toBe(false);
    fn.raiseInterrupt();
    await waiting;
    expect(fn.interruptMessage).toBe(1);
    // A stale `seen` resolves at once.
    await fn.waitForInterrupt(0);
  });

  it('lets the interrupt controller wake its waiter without an interrupt', async () => {
    const fn = PciFunction.create(0x18, identity);
    const waiting = fn.waitForInterrupt(fn.interruptMessage);
    fn.wakeInterruptWaiters();
    await waiting;
    expect(fn.interruptMessage).toBe(0);
  });
});
