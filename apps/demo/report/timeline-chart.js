// Draws each update's timeline in the HTML report (src/html-report.ts inlines this file after
// uPlot): one uPlot chart per `.timeline` element, from the page's `#timeline-data` block. The
// time axis is in milliseconds since the old kernel's reboot; each phase is a bar on a row of its
// own, the blackouts are shaded bands, and the NIC's packets per millisecond are uPlot's series.
// Each chart says what it drew in `data-bars` (the bars, as "lane/name"), for people and tests.
/* global document, uPlot, devicePixelRatio */
(() => {
  const LANE_COLOURS = { kernel: '#4c78a8', cache: '#f58518', vmm: '#54a24b' };
  const LANE_NAMES = { kernel: 'kernel', cache: 'cache', vmm: 'VMM' };
  const ROW_PX = 20;
  const timelines = JSON.parse(document.getElementById('timeline-data').textContent);

  for (const element of document.querySelectorAll('.timeline')) {
    draw(element, timelines[Number(element.dataset.timeline)]);
  }

  function draw(element, timeline) {
    const { bars, nic } = timeline;
    // The first phase on the top row.
    const rowOf = (index) => bars.length - 1 - index;
    const starts = [...bars.map((bar) => bar.start), timeline.guestPaused.start];
    const ends = [...bars.map((bar) => bar.end), timeline.vmBlackout.end];
    const span = Math.max(...ends) - Math.min(...starts);
    const low = Math.min(...starts) - span * 0.03;
    const high = Math.max(...ends) + span * 0.03;
    const shown = nic.time.map((time, i) => [time, nic.packetsPerMs[i]]);
    const inView = shown.filter(([time]) => time >= low && time <= high);
    const data =
      inView.length > 0
        ? [inView.map(([time]) => time), inView.map(([, rate]) => rate)]
        : [
            [low, high],
            [null, null],
          ];
    const topRate = Math.max(1, ...inView.map(([, rate]) => rate));

    const band = (u, interval, colour) => {
      const x0 = u.valToPos(interval.start, 'x', true);
      const x1 = u.valToPos(interval.end, 'x', true);
      u.ctx.fillStyle = colour;
      u.ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
    };
    const drawBands = (u) => {
      u.ctx.save();
      band(u, timeline.vmBlackout, 'rgba(228, 87, 86, 0.12)');
      band(u, timeline.cacheBlackout, 'rgba(228, 87, 86, 0.18)');
      u.ctx.restore();
    };
    const drawBars = (u) => {
      const { ctx } = u;
      const height = ROW_PX * 0.7 * devicePixelRatio;
      const drawn = [];
      ctx.save();
      ctx.beginPath();
      ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
      ctx.clip();
      bars.forEach((bar, index) => {
        const x0 = u.valToPos(bar.start, 'x', true);
        const x1 = u.valToPos(bar.end, 'x', true);
        const y = u.valToPos(rowOf(index), 'row', true);
        ctx.fillStyle = LANE_COLOURS[bar.lane];
        // A phase of microseconds still shows, as a line one pixel wide.
        ctx.fillRect(x0, y - height / 2, Math.max(x1 - x0, devicePixelRatio), height);
        drawn.push(`${bar.lane}/${bar.name}`);
      });
      ctx.restore();
      element.dataset.bars = JSON.stringify(drawn);
    };

    new uPlot(
      {
        title:
          `${timeline.from} → ${timeline.to}: blackout (shaded) ` +
          `${timeline.cacheBlackout.end.toFixed(2)} ms for the cache, ` +
          `${timeline.vmBlackout.end.toFixed(2)} ms for the VM`,
        width: Math.min(1060, document.body.clientWidth),
        height: 90 + bars.length * ROW_PX,
        scales: {
          x: { time: false, auto: false, range: [low, high] },
          row: { auto: false, range: [-0.5, bars.length - 0.5] },
          packets: { auto: false, range: [0, topRate * 1.15] },
        },
        axes: [
          { label: "ms since the old kernel's reboot" },
          {
            scale: 'row',
            size: 190,
            grid: { show: false },
            ticks: { show: false },
            splits: () => bars.map((_, index) => rowOf(index)),
            values: (_, splits) =>
              splits.map((row) => {
                const bar = bars[bars.length - 1 - row];
                return `${LANE_NAMES[bar.lane]}: ${bar.name}`;
              }),
          },
          { scale: 'packets', side: 1, label: 'NIC packets/ms', grid: { show: false } },
        ],
        series: [
          { label: 'ms' },
          { label: 'NIC packets/ms', scale: 'packets', stroke: '#b279a2', width: 1.5 },
        ],
        hooks: { drawClear: [drawBands], draw: [drawBars] },
      },
      data,
      element,
    );
  }
})();
