import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { SeriesData } from "./api";
import { align } from "./align";
import { axesFor, NO_UNIT, seriesUnits } from "./axes";
import type { Period } from "./alerts";
import { formatUnit, type Unit } from "./format";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
/** A time-series chart: one y-axis per unit (never percent and bytes/s on one scale); updated in place. */
const BAND = { critical: "rgba(220, 38, 38, 0.12)", warning: "rgba(234, 88, 12, 0.12)", info: "rgba(37, 99, 235, 0.08)" };

/** A uPlot plugin: shade the periods an alert fired on the metrics of this chart, behind the lines. */
function alertBands(periods: { current: Period[] }): uPlot.Plugin {
  return {
    hooks: {
      drawClear: (u: uPlot) => {
        const { ctx } = u;
        const { top, height, left, width } = u.bbox;
        ctx.save();
        for (const p of periods.current) {
          const x0 = Math.max(left, u.valToPos(p.from / 1000, "x", true));
          const x1 = Math.min(left + width, u.valToPos((p.to ?? Date.now()) / 1000, "x", true));
          if (x1 <= x0) continue;
          ctx.fillStyle = BAND[p.severity];
          ctx.fillRect(x0, top, x1 - x0, height);
        }
        ctx.restore();
      },
    },
  };
}

export function Chart({
  series,
  units,
  periods = [],
}: {
  series: SeriesData[];
  units: Record<string, Unit | null>;
  periods?: Period[];
}) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<{ chart: uPlot; shape: string } | null>(null);
  const shaded = useRef<Period[]>(periods);
  shaded.current = periods;
  const { xs, columns } = align(series);
  const perSeries = seriesUnits(series, units);
  const shape = JSON.stringify(series.map((s, i) => [s.metric, s.downsampled, perSeries[i]]));

  useEffect(() => {
    if (!host.current) return;
    const data = [xs.map((x) => x / 1000), ...columns] as uPlot.AlignedData;
    if (plot.current && plot.current.shape === shape) {
      plot.current.chart.setData(data); // same series and units: new points only (and the bands redrawn)
      return;
    }
    plot.current?.chart.destroy();
    const axes = axesFor(perSeries);
    const uSeries: uPlot.Series[] = [{}];
    const bands: uPlot.Band[] = [];
    series.forEach((s, n) => {
      const color = COLORS[n % COLORS.length];
      const unit = perSeries[n];
      const scale = unit ?? NO_UNIT;
      const base = uSeries.length;
      uSeries.push({ label: s.metric, scale, stroke: color, width: 1.5, spanGaps: false, value: (_u, v) => formatUnit(unit, v) });
      if (s.downsampled) {
        uSeries.push({ label: `${s.metric} min`, scale, stroke: "transparent", points: { show: false } });
        uSeries.push({ label: `${s.metric} max`, scale, stroke: "transparent", points: { show: false } });
        bands.push({ series: [base + 2, base + 1], fill: `${color}22` });
      }
    });
    const width = host.current.clientWidth || 800;
    const chart = new uPlot(
      {
        width,
        height: 320,
        series: uSeries,
        bands,
        scales: Object.fromEntries(axes.map((a) => [a.scale, { auto: true }])),
        axes: [
          {},
          ...axes.map((a) => ({
            scale: a.scale,
            side: a.side,
            size: 80,
            label: a.unit ?? "no unit",
            values: (_u: uPlot, splits: number[]) => splits.map((v) => formatUnit(a.unit, v)),
            grid: { show: a.side === 3 },
          })),
        ],
        legend: { live: true },
        plugins: [alertBands(shaded)],
      },
      data,
      host.current,
    );
    plot.current = { chart, shape };
    // What uPlot was actually given (it draws axes on the canvas): the browser test reads it.
    host.current.dataset.drawnAxes = chart.axes.slice(1).map((a) => a.label ?? "").join(" | ");
  }, [shape, series]); // eslint-disable-line react-hooks/exhaustive-deps

  useEffect(() => {
    plot.current?.chart.redraw(false); // new alert periods: repaint, same data
  }, [periods]);

  useEffect(() => {
    const resize = () => plot.current?.chart.setSize({ width: host.current?.clientWidth || 800, height: 320 });
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      plot.current?.chart.destroy();
      plot.current = null;
    };
  }, []);
  const labels = axesFor(perSeries).map((a) => a.unit ?? "no unit");
  return (
    <div
      className="chart"
      ref={host}
      data-points={xs.length}
      data-series={series.length}
      data-axes={labels.join(" | ")}
      data-alert-bands={periods.length}
    />
  );
}

/** A tiny inline line for the overview. */
export function Sparkline({ values }: { values: number[] }) {
  if (values.length < 2) return <svg className="spark" width={80} height={20} />;
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const span = hi - lo;
  const y = (v: number) => (span ? 19 - ((v - lo) / span) * 18 : 10); // a flat line in the middle
  const pts = values.map((v, i) => `${(i / (values.length - 1)) * 80},${y(v)}`).join(" ");
  return (
    <svg className="spark" width={80} height={20} aria-hidden="true">
      <polyline points={pts} fill="none" stroke="#2563eb" strokeWidth={1.2} />
    </svg>
  );
}
