import { describe, expect, it } from "vitest";
import { overviewPath, present, sparklinesPath } from "./overview-query";

describe("overviewPath", () => {
  it("asks the server for the view's page, sorted and searched", () => {
    const path = overviewPath({ q: "site=berlin", sort: "h:CPU", desc: true, page: 3 });
    const params = new URL(path, "http://x").searchParams;
    expect(path.startsWith("/api/v1/overview?")).toBe(true);
    expect(params.get("sort")).toBe("h:CPU");
    expect(params.get("desc")).toBe("1");
    expect(params.get("page")).toBe("3");
    expect(params.get("limit")).toBe("50");
    expect(params.get("q")).toBe("site=berlin");
  });
  it("leaves an empty search out", () => {
    expect(new URL(overviewPath({ q: "", sort: "id", desc: false, page: 1 }), "http://x").searchParams.has("q")).toBe(false);
  });
});

describe("sparklinesPath", () => {
  it("names every device of the page in one request", () => {
    const params = new URL(sparklinesPath(["a", "b/c"]), "http://x").searchParams;
    expect(params.getAll("device")).toEqual(["a", "b/c"]);
    expect(params.get("points")).toBe("30");
  });
});

describe("present", () => {
  it("drops the steps without a sample", () => {
    expect(present([1, null, 2, NaN])).toEqual([1, 2]);
    expect(present(undefined)).toEqual([]);
  });
});
