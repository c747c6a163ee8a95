import { useMemo, useState } from "react";

interface Props {
  available: string[];
  selected: string[];
  onChange: (selected: string[]) => void;
  max?: number;
}

/** A searchable list of metric keys with checkboxes; the chosen ones as removable chips. */
export function MetricPicker({ available, selected, onChange, max = 10 }: Props) {
  const [query, setQuery] = useState("");
  const matches = useMemo(() => {
    const words = query.toLowerCase().split(/\s+/).filter(Boolean);
    return available.filter((key) => words.every((w) => key.toLowerCase().includes(w)));
  }, [available, query]);
  const toggle = (key: string) => {
    if (selected.includes(key)) onChange(selected.filter((k) => k !== key));
    else if (selected.length < max) onChange([...selected, key]);
  };
  return (
    <div className="picker">
      <div className="chips">
        {selected.map((key) => (
          <button key={key} className="chip" onClick={() => toggle(key)} aria-label={`remove ${key}`}>
            {key} ×
          </button>
        ))}
      </div>
      <input
        type="search"
        placeholder={`search ${available.length} metrics…`}
        value={query}
        onChange={(e) => setQuery(e.target.value)}
        aria-label="search metrics"
      />
      <ul className="matches" role="listbox">
        {matches.slice(0, 200).map((key) => (
          <li key={key}>
            <label>
              <input
                type="checkbox"
                checked={selected.includes(key)}
                disabled={!selected.includes(key) && selected.length >= max}
                onChange={() => toggle(key)}
              />
              {key}
            </label>
          </li>
        ))}
        {matches.length > 200 && <li className="muted">{matches.length - 200} more: refine the search</li>}
        {matches.length === 0 && <li className="muted">no metric matches “{query}”</li>}
      </ul>
    </div>
  );
}
