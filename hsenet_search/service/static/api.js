// Calls to the hsenet-search API; the bearer token (when the server needs one) lives in sessionStorage.

const TOKEN_KEY = "hsenet-token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function call(method, path, body) {
  const init = { method, headers: headers() };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers = headers({ "Content-Type": "application/json" });
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return response;
}

export const api = {
  indexes: async () => (await call("GET", "/indexes")).json(),
  searchText: async (body) => (await call("POST", "/search/text", body)).json(),
  searchCase: async (body) => (await call("POST", "/search/volume", body)).json(),
  searchUpload: async (file, fields) => {
    const form = new FormData();
    form.append("file", file, file.name);
    for (const [key, value] of Object.entries(fields)) {
      if (Array.isArray(value)) value.forEach((v) => form.append(key, v));
      else if (value !== undefined && value !== null) form.append(key, String(value));
    }
    return (await call("POST", "/search/volume", form)).json();
  },
  caseInfo: async (scanId, index) =>
    (await call("GET", `/cases/${encodeURIComponent(scanId)}?${new URLSearchParams({ index_name: index })}`)).json(),
  generate: async (body) => (await call("POST", "/generate", body)).json(),
  locate: async (scanId, text, index) =>
    (await call("GET", `/cases/${encodeURIComponent(scanId)}/locate?${new URLSearchParams({ text, index_name: index })}`)).json(),
};

const objectUrls = new Map();

// A slice PNG as an <img> source: a plain URL without a token, else an object URL fetched with the header.
export async function sliceSrc(scanId, params) {
  const url = `/cases/${encodeURIComponent(scanId)}/slice.png?${new URLSearchParams(params)}`;
  if (!sessionStorage.getItem(TOKEN_KEY)) return url;
  if (!objectUrls.has(url)) {
    const blob = await (await call("GET", url)).blob();
    objectUrls.set(url, URL.createObjectURL(blob));
  }
  return objectUrls.get(url);
}
