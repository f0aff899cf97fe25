import { afterEach, describe, expect, it } from 'vitest';
import { until } from '@liveupdate/vitest-config/wait-until';
import {
  DMA_COPY_CTRL_ENABLE,
  DMA_COPY_DESC_INTERRUPT,
  DMA_COPY_REG_BASE_LO,
  DMA_COPY_REG_COMPLETED,
  DMA_COPY_REG_CTRL,
  DMA_COPY_REG_SIZE,
  DMA_COPY_REG_TAIL,
  DMA_COPY_STATUS,
  Machine,
  NIC_CTRL_RX_ENABLE,
  NIC_CTRL_RX_IRQ,
  NIC_DESC_SIZE,
  NIC_PACKET_SIZE,
  NIC_REG_CTRL,
  NIC_REG_INT_STATUS,
  NIC_REG_RX_BASE_LO,
  NIC_REG_RX_DROPS,
  NIC_REG_RX_HEAD,
  NIC_REG_RX_PACKETS,
  NIC_REG_RX_SIZE,
  NIC_REG_RX_TAIL,
  NIC_REG_STATUS,
  NIC_STATUS_RX_ACTIVE,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
} from '../src/index.js';

const machines: Machine[] = [];
afterEach(async () => {
  await Promise.all(machines.splice(0).map((m) => m.shutdown()));
});

function machine(): Machine {
  const m = Machine.create({
    ramBytes: 4 * 1024 * 1024,
    devices: [
      { kind: 'nic', bdf: '00:03.0', packetsPerSecond: 2000 },
      { kind: 'dma-copy', bdf: '00:04.0' },
    ],
  });
  machines.push(m);
  return m;
}

describe('machine devices', () => {
  it('completes no more copies per second than copiesPerSecond allows', async () => {
    const m = Machine.create({
      ramBytes: 4 * 1024 * 1024,
      devices: [{ kind: 'dma-copy', bdf: '00:04.0', copiesPerSecond: 100 }],
    });
    machines.push(m);
    const copy = m.hardware.function('00:04.0');
    const { memory } = m;
    // 21 descriptors of 16 bytes each, from 0x2000 to 0x3000, completions from 0x4000.
    for (let i = 0; i < 21; i++) {
      memory.writeU64(0x1000 + i * 32, 0x2000n);
      memory.writeU64(0x1008 + i * 32, 0x3000n);
      memory.writeU32(0x1010 + i * 32, 16);
      memory.writeU64(0x1018 + i * 32, BigInt(0x4000 + i * 8));
    }
    copy.writeRegister(DMA_COPY_REG_BASE_LO, 0x1000);
    copy.writeRegister(DMA_COPY_REG_SIZE, 32);
    copy.writeRegister(DMA_COPY_REG_CTRL, DMA_COPY_CTRL_ENABLE);
    copy.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    const start = performance.now();
    copy.writeRegister(DMA_COPY_REG_TAIL, 21);
    await until(() => copy.readRegister(DMA_COPY_REG_COMPLETED) === 21, '21 copies');
    // The first copy starts at once, the 21st no earlier than 20 / 100 s later. A busy host only
    // makes it later, so this bound cannot fail for want of CPU.
    expect(performance.now() - start).toBeGreaterThanOrEqual(200);
    expect(memory.readU32(0x4000 + 20 * 8)).toBe(DMA_COPY_STATUS.SUCCESS);
  });

  it('counts the operations and bytes of a copy engine doing DMA with translation off', async () => {
    const m = machine();
    const copy = m.hardware.function('00:04.0');
    const { memory } = m;
    // Descriptor at 0x1000: copy 100 bytes from 0x2000 to 0x3000, completion at 0x4000.
    memory.fill(0x2000, 100, 0x5a);
    memory.writeU64(0x1000, 0x2000n);
    memory.writeU64(0x1008, 0x3000n);
    memory.writeU32(0x1010, 100);
    memory.writeU64(0x1018, 0x4000n);
    copy.writeRegister(DMA_COPY_REG_BASE_LO, 0x1000);
    copy.writeRegister(DMA_COPY_REG_SIZE, 4);
    copy.writeRegister(DMA_COPY_REG_CTRL, DMA_COPY_CTRL_ENABLE);
    copy.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    copy.writeRegister(DMA_COPY_REG_TAIL, 1);
    await until(
      () => copy.readRegister(DMA_COPY_REG_COMPLETED) === 1,
      'copy.readRegister(DMA_COPY_REG_COMPLETED) === 1',
    );

    expect(memory.read(0x3000, 101)).toEqual(new Uint8Array([...Array(100).fill(0x5a), 0]));
    expect(memory.readU32(0x4000)).toBe(DMA_COPY_STATUS.SUCCESS);
    // Descriptor read, source read, destination write, completion write.
    expect(m.counters('00:04.0')).toMatchObject({
      dmaOps: 4,
      dmaBytes: 32 + 100 + 100 + 8,
      copies: 1,
      faults: 0,
    });
    expect(m.counters('00:03.0').dmaOps).toBe(0);
  });

  it('counts the drops of a NIC with no ring, and stops after a function-level reset', async () => {
    const m = machine();
    const nic = m.hardware.function('00:03.0');
    nic.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    nic.writeRegister(NIC_REG_CTRL, NIC_CTRL_RX_ENABLE);
    await until(() => m.counters('00:03.0').drops >= 10, '10 drops');
    expect(nic.readRegister(NIC_REG_RX_DROPS)).toBeGreaterThanOrEqual(10);

    nic.writeConfig16(PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_BCR_FLR);
    expect(nic.readRegister(NIC_REG_CTRL)).toBe(0);
    const after = m.counters('00:03.0');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(m.counters('00:03.0')).toEqual(after);
    expect(m.counters()).toMatchObject({ drops: after.drops, dmaOps: 0 });
  });

  it('reports its receive engine active until it has seen CTRL cleared, and nothing moves after', async () => {
    const m = machine();
    const nic = m.hardware.function('00:03.0');
    const active = (): boolean => (nic.readRegister(NIC_REG_STATUS) & NIC_STATUS_RX_ACTIVE) !== 0;
    expect(active()).toBe(false);
    nic.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    nic.writeRegister(NIC_REG_CTRL, NIC_CTRL_RX_ENABLE);
    await until(() => m.counters('00:03.0').drops >= 5, '5 drops');
    expect(active()).toBe(true);

    nic.writeRegister(NIC_REG_CTRL, 0);
    await until(() => !active(), 'the NIC to clear STATUS.RX_ACTIVE');
    // Stopped means stopped: every counter is final the moment the bit reads clear.
    const after = m.counters('00:03.0');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(m.counters('00:03.0')).toEqual(after);
    expect(nic.readRegister(NIC_REG_RX_DROPS)).toBe(after.drops);
  });

  it('delivers no NIC interrupt while MSI-X is disabled, and one per packet once it is enabled', async () => {
    const m = machine();
    const nic = m.hardware.function('00:03.0');
    const { memory } = m;
    // An 8-descriptor ring at 0x10000 (translation off: IOVA = physical address), buffers at 0x20000.
    const ringSize = 8;
    for (let i = 0; i < ringSize; i++) {
      memory.writeU64(0x10000 + i * NIC_DESC_SIZE, BigInt(0x20000 + i * 256));
      memory.writeU32(0x10000 + i * NIC_DESC_SIZE + 8, 256);
    }
    nic.writeRegister(NIC_REG_RX_BASE_LO, 0x10000);
    nic.writeRegister(NIC_REG_RX_SIZE, ringSize);
    nic.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    nic.writeRegister(NIC_REG_CTRL, NIC_CTRL_RX_ENABLE | NIC_CTRL_RX_IRQ);
    // The ring is full at head + 1 = tail: seven packets land, the rest are dropped.
    await until(
      () => nic.readRegister(NIC_REG_RX_PACKETS) === ringSize - 1,
      'nic.readRegister(NIC_REG_RX_PACKETS) === ringSize - 1',
    );
    expect(memory.readU32(0x20000 + 8)).toBe(NIC_PACKET_SIZE);
    expect(nic.readRegister(NIC_REG_INT_STATUS) & 1).toBe(1);
    expect(nic.interruptMessage).toBe(0);
    expect(m.counters('00:03.0').interrupts).toBe(0);

    nic.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    const seen = nic.interruptMessage;
    // Hand four descriptors back: four more packets, four interrupts.
    nic.writeRegister(NIC_REG_RX_TAIL, 4);
    await until(
      () => nic.readRegister(NIC_REG_RX_PACKETS) === ringSize - 1 + 4,
      'nic.readRegister(NIC_REG_RX_PACKETS) === ringSize - 1 + 4',
    );
    await until(() => m.counters('00:03.0').drops > 0, 'a drop');
    expect(m.counters('00:03.0').interrupts).toBe(4);
    expect((nic.interruptMessage - seen) >>> 0).toBe(4);
    expect(nic.readRegister(NIC_REG_RX_HEAD)).toBe(3);
  });

  it('raises an interrupt for a completed copy descriptor only when it asks for one', async () => {
    const m = machine();
    const copy = m.hardware.function('00:04.0');
    const { memory } = m;
    // Two descriptors at 0x1000: the first without the interrupt flag, the second with it.
    memory.fill(0x2000, 64, 0x11);
    for (let i = 0; i < 2; i++) {
      const at = 0x1000 + i * 32;
      memory.writeU64(at, 0x2000n);
      memory.writeU64(at + 8, BigInt(0x3000 + i * 0x100));
      memory.writeU32(at + 16, 64);
      memory.writeU32(at + 20, i === 1 ? DMA_COPY_DESC_INTERRUPT : 0);
      memory.writeU64(at + 24, BigInt(0x4000 + i * 8));
    }
    copy.writeRegister(DMA_COPY_REG_BASE_LO, 0x1000);
    copy.writeRegister(DMA_COPY_REG_SIZE, 4);
    copy.writeRegister(DMA_COPY_REG_CTRL, DMA_COPY_CTRL_ENABLE);
    copy.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
    copy.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    const woken = copy.waitForInterrupt(copy.interruptMessage);
    copy.writeRegister(DMA_COPY_REG_TAIL, 1);
    await until(
      () => copy.readRegister(DMA_COPY_REG_COMPLETED) === 1,
      'copy.readRegister(DMA_COPY_REG_COMPLETED) === 1',
    );
    expect(copy.interruptMessage).toBe(0);

    copy.writeRegister(DMA_COPY_REG_TAIL, 2);
    await woken;
    // The interrupt follows the completion it announces.
    expect(copy.readRegister(DMA_COPY_REG_COMPLETED)).toBe(2);
    expect(memory.readU32(0x4008)).toBe(DMA_COPY_STATUS.SUCCESS);
    expect(copy.interruptMessage).toBe(1);
    expect(m.counters('00:04.0')).toMatchObject({ copies: 2, interrupts: 1 });
  });
});
