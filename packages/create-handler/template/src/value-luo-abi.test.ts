import { describe, expect, it } from 'vitest';
import { valueLuoSer } from './value-luo-abi.js';

describe('value_luo_ser', () => {
  it('places its fields at the documented offsets', () => {
    expect(valueLuoSer.size).toBe(24);
    expect(valueLuoSer.offsets).toEqual({ data: 0, length: 8, flags: 16, reserved: 20 });
  });

  it('reads back what it wrote, little-endian', () => {
    const bytes = new Uint8Array(valueLuoSer.size);
    const ser = { data: 0x1234_5000n, length: 42n, flags: 2, reserved: 0 };
    valueLuoSer.encodeInto(bytes, 0, ser);
    expect(bytes.slice(0, 4)).toEqual(new Uint8Array([0x00, 0x50, 0x34, 0x12]));
    expect(valueLuoSer.decode(bytes)).toEqual(ser);
  });
});
