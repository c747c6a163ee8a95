import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MetricPicker } from "./MetricPicker";

const KEYS = ["cpu-percent", "cpu-core-0-percent", "memory-percent", "disk-usage-sda-percent", "gpu-0-temp_c"];

afterEach(cleanup);

describe("MetricPicker", () => {
  it("filters by every word typed", () => {
    render(<MetricPicker available={KEYS} selected={[]} onChange={() => undefined} />);
    fireEvent.change(screen.getByLabelText("search metrics"), { target: { value: "cpu percent" } });
    const labels = screen.getAllByRole("checkbox").map((box) => box.parentElement!.textContent);
    expect(labels).toEqual(["cpu-percent", "cpu-core-0-percent"]);
    fireEvent.change(screen.getByLabelText("search metrics"), { target: { value: "nothing" } });
    expect(screen.getByText(/no metric matches/)).toBeTruthy();
  });
  it("adds and removes metrics", () => {
    const onChange = vi.fn();
    const { rerender } = render(<MetricPicker available={KEYS} selected={["cpu-percent"]} onChange={onChange} />);
    fireEvent.click(screen.getByLabelText("remove cpu-percent"));
    expect(onChange).toHaveBeenLastCalledWith([]);
    rerender(<MetricPicker available={KEYS} selected={["cpu-percent"]} onChange={onChange} />);
    fireEvent.click(screen.getByText("memory-percent"));
    expect(onChange).toHaveBeenLastCalledWith(["cpu-percent", "memory-percent"]);
  });
  it("stops at the maximum", () => {
    const onChange = vi.fn();
    render(<MetricPicker available={KEYS} selected={["cpu-percent", "memory-percent"]} onChange={onChange} max={2} />);
    const box = screen.getByText("gpu-0-temp_c").querySelector("input")!;
    expect(box.disabled).toBe(true);
  });
});
