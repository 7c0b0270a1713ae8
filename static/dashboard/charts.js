// Keel dashboard: the small time-series plots (uPlot, served by the dashboard itself).
// Three plots of the one-second samples the server sends: writes (WAL kB/s on the
// leader), reads (transactions/s on the leader and the replicas), replication lag;
// each change of leader is a vertical mark on all three.
'use strict';

window.KeelCharts = (() => {
  const keep = 600;
  const kb = (v) => (v === null || v === undefined ? null : v / 1024);
  /** 1234567 -> 1.2M: axis labels stay narrow */
  const compact = (v) => {
    const a = Math.abs(v);
    if (a >= 1e9) return `${+(v / 1e9).toFixed(1)}G`;
    if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
    if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
    return `${+v.toFixed(2)}`;
  };

  const plots = [
    { title: 'writes: WAL written on the leader (kB/s)', series: [{ label: 'WAL kB/s', stroke: '#1f7a3d', pick: (s) => kb(s.walBytesPerSecond) }] },
    {
      title: 'reads: transactions/s',
      series: [
        { label: 'replicas', stroke: '#2456a6', pick: (s) => s.replicaTps },
        { label: 'leader', stroke: '#9a6700', pick: (s) => s.leaderTps },
      ],
    },
    { title: 'replication lag, the replica furthest behind (kB)', series: [{ label: 'lag kB', stroke: '#b3261e', pick: (s) => kb(s.maxLagBytes) }] },
  ];

  /** Draws each mark (a change of leader) as a dashed line with its label. */
  function marksPlugin(marks) {
    return {
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            ctx.save();
            ctx.strokeStyle = '#b3261e';
            ctx.fillStyle = '#b3261e';
            ctx.setLineDash([4, 3]);
            ctx.font = `${Math.round(10 * devicePixelRatio)}px system-ui, sans-serif`;
            for (const mark of marks.list) {
              const x = Math.round(u.valToPos(mark.atMs / 1000, 'x', true));
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
              ctx.fillText(mark.label, x + 3, u.bbox.top + 12 * devicePixelRatio);
            }
            ctx.restore();
          },
        ],
      },
    };
  }

  function create(container) {
    const samples = [];
    const marks = { list: [] };
    const charts = plots.map((plot) => {
      const box = document.createElement('div');
      box.className = 'chart';
      const title = document.createElement('h3');
      title.textContent = plot.title;
      box.append(title);
      container.append(box);
      const width = Math.max(280, Math.min(520, container.clientWidth / plots.length - 16));
      const u = new uPlot(
        {
          width,
          height: 160,
          scales: { x: { time: true } },
          series: [{}, ...plot.series.map((s) => ({ label: s.label, stroke: s.stroke, width: 1.5, spanGaps: false }))],
          axes: [{}, { size: 56, values: (_u, values) => values.map(compact) }],
          legend: { show: true },
          plugins: [marksPlugin(marks)],
        },
        [[], ...plot.series.map(() => [])],
        box,
      );
      return { plot, u };
    });

    function redraw() {
      const xs = samples.map((s) => s.atMs / 1000);
      for (const { plot, u } of charts) u.setData([xs, ...plot.series.map((series) => samples.map((s) => series.pick(s)))]);
    }

    return {
      reset(all, allMarks) {
        samples.splice(0, samples.length, ...all.slice(-keep));
        marks.list = allMarks.slice();
        redraw();
      },
      push(sample, mark) {
        samples.push(sample);
        if (samples.length > keep) samples.splice(0, samples.length - keep);
        if (mark) marks.list.push(mark);
        const oldest = samples[0] ? samples[0].atMs : 0;
        marks.list = marks.list.filter((m) => m.atMs >= oldest - 1000);
        redraw();
      },
      marks: () => marks.list.slice(),
    };
  }

  return { create };
})();
