import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { SeriesData } from "./api";
import { align } from "./align";
import { axesFor, NO_UNIT, seriesUnits } from "./axes";
import { formatUnit, type Unit } from "./format";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
/** A time-series chart: one y-axis per unit (never percent and bytes/s on one scale); updated in place. */
export function Chart({ series, units }: { series: SeriesData[]; units: Record<string, Unit | null> }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<{ chart: uPlot; shape: string } | null>(null);
  const { xs, columns } = align(series);
  const perSeries = seriesUnits(series, units);
  const shape = JSON.stringify(series.map((s, i) => [s.metric, s.downsampled, perSeries[i]]));

  useEffect(() => {
    if (!host.current) return;
    const data = [xs.map((x) => x / 1000), ...columns] as uPlot.AlignedData;
    if (plot.current && plot.current.shape === shape) {
      plot.current.chart.setData(data); // same series and units: new points only
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
      },
      data,
      host.current,
    );
    plot.current = { chart, shape };
    // What uPlot was actually given (it draws axes on the canvas): the browser test reads it.
    host.current.dataset.drawnAxes = chart.axes.slice(1).map((a) => a.label ?? "").join(" | ");
  }, [shape, series]); // eslint-disable-line react-hooks/exhaustive-deps

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
  return <div className="chart" ref={host} data-points={xs.length} data-series={series.length} data-axes={labels.join(" | ")} />;
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
