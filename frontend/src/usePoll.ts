import { useEffect, useRef, useState } from "react";
import { api, ApiError } from "./api";

export interface Polled<T> {
  data: T | null;
  error: string | null;
  /** When the data last arrived (ms since the epoch). */
  at: number;
}

/**
 * Load now and every `everyMs` (null: once) while `key` stays the same; a new key starts over.
 * A failed refresh keeps the last data and sets `error`; a request still running when the key
 * changes or the component goes away is aborted.
 */
export function usePoll<T>(key: string | null, load: (signal: AbortSignal) => Promise<T>, everyMs: number | null): Polled<T> {
  const [state, setState] = useState<Polled<T>>({ data: null, error: null, at: 0 });
  const loader = useRef(load);
  loader.current = load;
  useEffect(() => {
    if (key === null) {
      setState({ data: null, error: null, at: 0 });
      return;
    }
    const ctrl = new AbortController();
    const run = () =>
      loader
        .current(ctrl.signal)
        .then((data) => setState({ data, error: null, at: Date.now() }))
        .catch((e: Error) => {
          if (e.name !== "AbortError")
            setState((old) => ({ ...old, error: e instanceof ApiError ? e.message : String(e) }));
        });
    run();
    const timer = everyMs ? window.setInterval(run, everyMs) : undefined;
    return () => {
      ctrl.abort();
      if (timer) window.clearInterval(timer);
    };
  }, [key, everyMs]);
  return state;
}

/** `GET path` polled (see usePoll). */
export function useApi<T>(path: string | null, everyMs: number | null): Polled<T> {
  return usePoll<T>(path, (signal) => api<T>(path!, signal), everyMs);
}
