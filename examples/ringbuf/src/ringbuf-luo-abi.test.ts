import { describe, expect, it } from 'vitest';
import { ringbufLuoSer } from './ringbuf-luo-abi.js';
import { ringbufRecordHeader, ringbufStatsArg } from './ringbuf-uapi.js';

describe('the ringbuf-v1 layouts', () => {
  it('places ringbuf_luo_ser fields at the documented offsets', () => {
    expect(ringbufLuoSer.size).toBe(64);
    expect(ringbufLuoSer.offsets).toEqual({
      size: 0,
      data: 8,
      head: 16,
      tail: 24,
      records: 32,
      dropped: 40,
      liveUpdates: 48,
      flags: 56,
      reserved: 60,
    });
  });

  it('round-trips ringbuf_luo_ser, little-endian', () => {
    const value = {
      size: 0x1_0000n,
      data: 0x20_0000n,
      head: 0x1_2345_6788n,
      tail: 0x1_2345_0000n,
      records: 3n,
      dropped: 2n,
      liveUpdates: 1n,
      flags: 2,
      reserved: 0,
    };
    const bytes = ringbufLuoSer.encode(value);
    expect(ringbufLuoSer.decode(bytes)).toEqual(value);
    expect([...bytes.subarray(8, 16)]).toEqual([0, 0, 0x20, 0, 0, 0, 0, 0]);
    expect(bytes[56]).toBe(2);
  });

  it('places the uAPI structs at the documented offsets', () => {
    expect(ringbufRecordHeader.size).toBe(8);
    expect(ringbufRecordHeader.offsets).toEqual({ len: 0, reserved: 4 });
    expect(ringbufStatsArg.size).toBe(64);
    expect(ringbufStatsArg.offsets).toEqual({
      size: 0,
      flags: 4,
      capacity: 8,
      used: 16,
      records: 24,
      dropped: 32,
      head: 40,
      tail: 48,
      liveUpdates: 56,
    });
  });
});
