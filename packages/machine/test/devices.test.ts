import { afterEach, describe, expect, it } from 'vitest';
import {
  DMA_COPY_CTRL_ENABLE,
  DMA_COPY_REG_BASE_LO,
  DMA_COPY_REG_COMPLETED,
  DMA_COPY_REG_CTRL,
  DMA_COPY_REG_SIZE,
  DMA_COPY_REG_TAIL,
  DMA_COPY_STATUS,
  Machine,
  NIC_CTRL_RX_ENABLE,
  NIC_REG_CTRL,
  NIC_REG_RX_DROPS,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
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

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('machine devices', () => {
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
    await until(() => copy.readRegister(DMA_COPY_REG_COMPLETED) === 1);

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
    await until(() => m.counters('00:03.0').drops >= 10);
    expect(nic.readRegister(NIC_REG_RX_DROPS)).toBeGreaterThanOrEqual(10);

    nic.writeConfig16(PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_BCR_FLR);
    expect(nic.readRegister(NIC_REG_CTRL)).toBe(0);
    const after = m.counters('00:03.0');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(m.counters('00:03.0')).toEqual(after);
    expect(m.counters()).toMatchObject({ drops: after.drops, dmaOps: 0 });
  });
});
