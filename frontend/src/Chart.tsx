import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { SeriesData } from "./api";
import { align } from "./align";
import { formatValue } from "./format";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

export function Chart({ series }: { series: SeriesData[] }) {
  const host = useRef<HTMLDivElement>(null);
  const { xs, columns } = align(series);
  useEffect(() => {
    if (!host.current) return;
    const uSeries: uPlot.Series[] = [{}];
    const bands: uPlot.Band[] = [];
    series.forEach((s, n) => {
      const color = COLORS[n % COLORS.length];
      const base = uSeries.length;
      uSeries.push({ label: s.metric, stroke: color, width: 1.5, spanGaps: false, value: (_u, v) => formatValue(s.metric, v) });
      if (s.downsampled) {
        uSeries.push({ label: `${s.metric} min`, stroke: "transparent", points: { show: false } });
        uSeries.push({ label: `${s.metric} max`, stroke: "transparent", points: { show: false } });
        bands.push({ series: [base + 2, base + 1], fill: `${color}22` });
      }
    });
    const width = host.current.clientWidth || 800;
    const plot = new uPlot(
      { width, height: 320, series: uSeries, bands, axes: [{}, { size: 70 }], legend: { live: true } },
      [xs.map((x) => x / 1000), ...columns] as uPlot.AlignedData,
      host.current,
    );
    const resize = () => plot.setSize({ width: host.current?.clientWidth || width, height: 320 });
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      plot.destroy();
    };
  }, [series]); // eslint-disable-line react-hooks/exhaustive-deps
  return <div className="chart" ref={host} data-points={xs.length} data-series={series.length} />;
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
