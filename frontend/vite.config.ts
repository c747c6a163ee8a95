import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// The build goes into the server package, which serves it at "/".
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "../server/src/edgemon_server/static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 400,
  },
  server: { proxy: { "/api": "http://127.0.0.1:8000", "/healthz": "http://127.0.0.1:8000" } },
  test: { environment: "jsdom", include: ["src/**/*.test.{ts,tsx}"] },
});
