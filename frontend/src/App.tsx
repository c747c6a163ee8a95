import { useEffect, useState } from "react";
import { setToken } from "./api";
import { Device } from "./Device";
import { Overview } from "./Overview";
import { follow, parseDeviceView, parseOverview } from "./url";

function useLocation(): { pathname: string; search: string } {
  const read = () => ({ pathname: window.location.pathname, search: window.location.search });
  const [location, setLocation] = useState(read);
  useEffect(() => {
    const update = () => setLocation(read());
    window.addEventListener("popstate", update);
    return () => window.removeEventListener("popstate", update);
  }, []);
  return location;
}

function TokenForm({ onDone }: { onDone: () => void }) {
  const [value, setValue] = useState("");
  return (
    <form
      className="token"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(value.trim());
        onDone();
      }}
    >
      <p>This edgemon server needs its API token (EDGEMON_API_TOKEN). It is kept in this browser.</p>
      <input type="password" value={value} onChange={(e) => setValue(e.target.value)} aria-label="API token" autoFocus />
      <button type="submit" disabled={!value.trim()}>
        save
      </button>
    </form>
  );
}

export function App() {
  const { pathname, search } = useLocation();
  const [needToken, setNeedToken] = useState(false);
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    const ask = () => setNeedToken(true);
    window.addEventListener("edgemon-auth", ask);
    return () => window.removeEventListener("edgemon-auth", ask);
  }, []);
  const device = parseDeviceView(pathname, search);
  return (
    <>
      <header>
        <a href="/" className="brand" onClick={follow("/")}>
          edgemon
        </a>
      </header>
      <main key={generation}>
        {needToken && (
          <TokenForm
            onDone={() => {
              setNeedToken(false);
              setGeneration((g) => g + 1);
            }}
          />
        )}
        {device ? <Device view={device} /> : <Overview view={parseOverview(search)} />}
      </main>
    </>
  );
}
