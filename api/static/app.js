// The /ui page: calls the public HTTP API of this server only (see api/ui.py).
"use strict";

const KEY_STORAGE = "reviewscore.apiKey";
const HEAD_BYTES = 64 * 1024;
const JOB_POLL_MS = 1000;
const JOBS_REFRESH_MS = 5000;
// A dead service must not be shown as ready for long: ask often, and give up on a slow answer.
const READY_RECHECK_MS = 5000;
const READY_TIMEOUT_MS = 4000;
const TEXT_COLUMNS = ["text", "review"];
const SEPARATORS = [",", ";", "\t", "|"];

const $ = (id) => document.getElementById(id);
const numberFormat = new Intl.NumberFormat();

// ---------------------------------------------------------------- calling the API ----

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// The API answers errors as {"detail": "..."}; an older server sent validation errors as a list.
function describeError(status, body, statusText) {
  const detail = body && typeof body === "object" ? body.detail : undefined;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail
      .map((item) => {
        const where = (item.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
        return where ? `${where}: ${item.msg}` : item.msg;
      })
      .join("; ");
  }
  return `the server answered ${status}${statusText ? " " + statusText : ""}`;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch {
    throw new ApiError("the service cannot be reached: is it running?", 0);
  }
  const body = parseJson(await response.text());
  if (response.status === 401) {
    const message = describeError(401, body, response.statusText);
    askForKey(message);
    throw new ApiError(message, 401);
  }
  if (!response.ok) {
    throw new ApiError(describeError(response.status, body, response.statusText), response.status);
  }
  return body;
}

function show(element, text) {
  element.textContent = text;
  element.hidden = false;
}

function hide(element) {
  element.hidden = true;
}

// ---------------------------------------------------------------- API key ----

function askForKey(message) {
  $("key-message").textContent = apiKey()
    ? `${message}: enter another key.`
    : "This server needs an API key for scoring and jobs.";
  $("key-panel").hidden = false;
  refreshKeyStatus();
}

function refreshKeyStatus() {
  $("key-status").hidden = !apiKey();
}

function setupKeyForm() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("api-key").value = "";
    hide($("key-panel"));
    refreshKeyStatus();
    loadModels();
    loadJobs();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    refreshKeyStatus();
    loadJobs();
  });
  refreshKeyStatus();
}

// ---------------------------------------------------------------- service state ----

function notReadyReasons(state) {
  const reasons = [];
  if (state.database && state.database !== "ok") reasons.push(`database ${state.database}`);
  if (state.redis && state.redis !== "ok") reasons.push(`redis ${state.redis}`);
  // Workers are found through Redis: without it, whether any runs is unknown.
  if (state.redis === "ok" && !(state.workers && state.workers.length)) reasons.push("no worker");
  return reasons;
}

async function fetchReadiness() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), READY_TIMEOUT_MS);
  try {
    const response = await fetch("/readyz", {
      headers: { Accept: "application/json" },
      cache: "no-store",
      signal: controller.signal,
    });
    return parseJson(await response.text());
  } catch {
    return null; // refused, cut, or no answer in time
  } finally {
    clearTimeout(timer);
  }
}

async function checkReady() {
  const pill = $("service-status");
  const state = await fetchReadiness();
  if (!state || typeof state.ready !== "boolean") {
    pill.className = "pill pill-bad";
    pill.textContent = "unreachable";
    show($("banner"), "service unreachable: the API does not answer; is it running?");
  } else if (!state.ready) {
    const reasons = notReadyReasons(state);
    pill.className = "pill pill-bad";
    pill.textContent = "not ready";
    show($("banner"), `service not ready: ${reasons.join("; ") || "unknown reason"}`);
  } else {
    const workers = state.workers.length;
    pill.className = "pill pill-ok";
    pill.textContent = `ready · ${workers} worker${workers === 1 ? "" : "s"}`;
    hide($("banner"));
    if (!models.length) loadModels();
  }
  setTimeout(checkReady, READY_RECHECK_MS);
}

// ---------------------------------------------------------------- models ----

let models = [];

function modelByName(name) {
  return models.find((m) => m.name === name) || models.find((m) => m.default) || null;
}

function readsText(model) {
  if (!model) return "";
  return model.max_tokens === null || model.max_tokens === undefined
    ? "the model reads all of it"
    : `the model reads its first ${numberFormat.format(model.max_tokens)} tokens`;
}

function updatePlaceholder() {
  const model = modelByName($("single-model").value);
  const reads = readsText(model);
  $("input-text").placeholder = `Write a movie review${reads ? ` (${reads})` : ""}… Ctrl+Enter scores it.`;
}

async function loadModels() {
  try {
    const answer = await api("/v1/models");
    models = (answer && answer.models) || [];
  } catch {
    return; // no key yet, or no service: the pill and the key panel say so
  }
  for (const select of document.querySelectorAll(".model-select")) {
    const previous = select.value;
    const choices = models.map((m) => {
      const accuracy = typeof m.test_accuracy === "number" ? ` · ${(m.test_accuracy * 100).toFixed(1)} %` : "";
      return [m.name, `${m.name}${m.default ? " (default)" : ""}${accuracy}`];
    });
    const fallback = (models.find((m) => m.default) || models[0] || { name: "" }).name;
    fillSelect(select, choices.length ? choices : [["", "default"]], previous || fallback);
    select.disabled = !choices.length;
  }
  updatePlaceholder();
}

// ---------------------------------------------------------------- single review ----

function formatScore(p) {
  return p.toFixed(3);
}

function renderScore(answer) {
  const result = answer.results[0];
  const positive = result.p_positive;
  const negative = 1 - positive;
  $("verdict").textContent = positive >= 0.5 ? "Positive" : "Negative";
  $("verdict").className = positive >= 0.5 ? "verdict-positive" : "verdict-negative";
  $("positive-score").textContent = formatScore(positive);
  $("negative-score").textContent = formatScore(negative);
  $("positive-bar").style.width = `${(positive * 100).toFixed(1)}%`;
  $("negative-bar").style.width = `${(negative * 100).toFixed(1)}%`;
  $("model-name").textContent = answer.model;
  $("model-version").textContent = answer.model_version;
  const model = modelByName(answer.model);
  $("truncated-note").textContent =
    model && model.max_tokens ? ` · only the first ${numberFormat.format(model.max_tokens)} tokens were read` : " · only the first tokens were read";
  $("truncated-note").hidden = !result.truncated;
  $("score-output").hidden = false;
}

function setupSingle() {
  const text = $("input-text");
  for (const example of document.querySelectorAll(".example")) {
    example.addEventListener("click", () => {
      text.value = example.textContent;
      text.focus();
    });
  }
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("score-form").requestSubmit();
    }
  });
  $("single-model").addEventListener("change", updatePlaceholder);
  $("clear-text").addEventListener("click", () => {
    text.value = "";
    hide($("score-output"));
    hide($("score-error"));
    text.focus();
  });
  $("score-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    hide($("score-error"));
    if (!text.value.trim()) {
      hide($("score-output"));
      show($("score-error"), "Write a review first, or pick one of the examples.");
      return;
    }
    const button = $("score-button");
    button.disabled = true;
    button.textContent = "Scoring…";
    try {
      const answer = await api("/v1/score", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reviews: [text.value], model: $("single-model").value || null }),
      });
      renderScore(answer);
    } catch (error) {
      hide($("score-output"));
      show($("score-error"), error.message);
    } finally {
      button.disabled = false;
      button.textContent = "Score";
    }
  });
}

// ---------------------------------------------------------------- CSV header ----

async function readHeadBytes(file) {
  const start = new Uint8Array(await file.slice(0, HEAD_BYTES).arrayBuffer());
  if (!(start[0] === 0x1f && start[1] === 0x8b)) return start;
  if (typeof DecompressionStream === "undefined") return null;
  // A .csv.gz: inflate just enough of it to see the header.
  const reader = file.stream().pipeThrough(new DecompressionStream("gzip")).getReader();
  const parts = [];
  let size = 0;
  try {
    while (size < HEAD_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      size += value.length;
    }
  } catch {
    if (!size) return null;
  } finally {
    reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

// The first record of a CSV (quoted fields may hold separators and line breaks), as the
// server reads it; null when the header does not end within the bytes read.
function parseHeader(text, wholeFile, separator) {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const fields = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        field += c;
      }
    } else if (c === '"') {
      quoted = true;
    } else if (c === separator) {
      fields.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      fields.push(field);
      return fields;
    } else {
      field += c;
    }
  }
  if (wholeFile && !quoted && (fields.length || field)) {
    fields.push(field);
    return fields;
  }
  return null;
}

// The separator the header line uses most, outside quotes (a comma when none appears).
function detectSeparator(text) {
  const counts = new Map(SEPARATORS.map((s) => [s, 0]));
  let quoted = false;
  for (const c of text) {
    if (c === '"') quoted = !quoted;
    else if (!quoted && (c === "\n" || c === "\r")) break;
    else if (!quoted && counts.has(c)) counts.set(c, counts.get(c) + 1);
  }
  let best = ",";
  for (const [separator, count] of counts) if (count > counts.get(best)) best = separator;
  return best;
}

// Text from the file's first bytes: the chosen encoding, else UTF-8 (BOMs honoured), else
// Windows-1252, what most non-UTF-8 CSV files from spreadsheets are.
function decodeHead(bytes, chosen) {
  if (chosen) {
    try {
      return new TextDecoder(chosen).decode(bytes);
    } catch {
      /* an encoding this browser does not know: guess as below */
    }
  }
  if (bytes[0] === 0xff && bytes[1] === 0xfe) return new TextDecoder("utf-16le").decode(bytes);
  if (bytes[0] === 0xfe && bytes[1] === 0xff) return new TextDecoder("utf-16be").decode(bytes);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // A multi-byte character cut at the end of the bytes read is still UTF-8.
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes.slice(0, Math.max(bytes.length - 3, 0)));
    } catch {
      return new TextDecoder("windows-1252").decode(bytes);
    }
  }
}

// What a file is, from its name and first bytes: csv, jsonl, parquet, or a kind we refuse.
function fileKind(name, bytes) {
  const lower = name.toLowerCase().replace(/\.gz$/, "");
  if (bytes && bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04) return "zip";
  if (lower.endsWith(".parquet") || (bytes && String.fromCharCode(...bytes.slice(0, 4)) === "PAR1")) return "parquet";
  if (lower.endsWith(".jsonl") || lower.endsWith(".ndjson")) return "jsonl";
  if (lower.endsWith(".tsv")) return "tsv";
  return "csv";
}

// The field names of the first JSON Lines record; nested objects as dotted paths.
function jsonlColumns(text) {
  const first = text.split(/\r?\n/).find((line) => line.trim());
  const record = first ? parseJson(first) : null;
  if (!record || typeof record !== "object" || Array.isArray(record)) return null;
  const names = [];
  const walk = (value, prefix) => {
    for (const [key, inner] of Object.entries(value)) {
      const path = prefix ? `${prefix}.${key}` : key;
      if (inner && typeof inner === "object" && !Array.isArray(inner)) walk(inner, path);
      else names.push(path);
    }
  };
  walk(record, "");
  return names;
}

function fillSelect(select, choices, selected) {
  select.replaceChildren();
  for (const [value, label] of choices) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    option.selected = value === selected;
    select.append(option);
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

// What the page knows of the chosen file: its kind, its columns (null: unknown), and whether
// a text column must still be chosen before the upload.
let chosen = { kind: null, columns: null, needsTextColumn: false };

function updateUploadButton() {
  const file = $("csv-file").files[0];
  const waitingForColumn = chosen.needsTextColumn && !$("text-column").value;
  $("upload-button").disabled = !file || chosen.kind === "zip" || waitingForColumn;
}

async function readColumns(file, kind) {
  if (kind === "parquet") return null; // its schema sits at the end of the file: the server reads it
  const bytes = await readHeadBytes(file);
  if (!bytes) return null;
  const text = decodeHead(bytes, $("encoding").value);
  if (kind === "jsonl") return jsonlColumns(text);
  const whole = file.size <= HEAD_BYTES && bytes.length < HEAD_BYTES;
  const separator = $("delimiter").value || (kind === "tsv" ? "\t" : detectSeparator(text));
  return parseHeader(text, whole, separator);
}

async function onFileChosen() {
  const file = $("csv-file").files[0];
  const textSelect = $("text-column");
  const idSelect = $("id-column");
  const labelSelect = $("label-column");
  hide($("upload-error"));
  hide($("upload-progress"));
  textSelect.disabled = idSelect.disabled = labelSelect.disabled = true;
  chosen = { kind: null, columns: null, needsTextColumn: false };
  updateUploadButton();
  if (!file) {
    hide($("file-info"));
    textSelect.replaceChildren();
    idSelect.replaceChildren();
    labelSelect.replaceChildren();
    return;
  }
  let kind = "csv";
  let columns = null;
  try {
    const start = new Uint8Array(await file.slice(0, 8).arrayBuffer());
    kind = fileKind(file.name, start);
    if (kind !== "zip") columns = await readColumns(file, kind);
  } catch {
    columns = null;
  }
  chosen = { kind, columns, needsTextColumn: false };
  const notCsv = kind === "jsonl" || kind === "parquet";
  $("delimiter").disabled = notCsv;
  $("encoding").disabled = kind === "parquet";
  const about = `${file.name} · ${formatBytes(file.size)}`;
  if (kind === "zip") {
    fillSelect(textSelect, [], "");
    fillSelect(idSelect, [], "");
    fillSelect(labelSelect, [], "");
    show($("file-info"), `${about} · this looks like an Excel workbook or another ZIP archive: save it as CSV first`);
    updateUploadButton();
    return;
  }
  if (!columns || !columns.length) {
    // The server still reads the header itself and says what is wrong.
    const why = kind === "parquet" ? "the server reads a Parquet file's columns" : "the header could not be read here";
    show($("file-info"), `${about} · ${why}; the server picks 'text', else 'review'`);
    fillSelect(textSelect, [["", "(server default)"]], "");
    fillSelect(idSelect, [["", "(automatic)"]], "");
    fillSelect(labelSelect, [["", "(server default)"]], "");
    updateUploadButton();
    return;
  }
  const lowered = columns.map((c) => c.toLowerCase());
  const guess = TEXT_COLUMNS.map((name) => lowered.indexOf(name)).find((i) => i >= 0);
  const textChoices = columns.map((c) => [c, c]);
  let info = `${about} · ${columns.length} column${columns.length === 1 ? "" : "s"}`;
  if (guess === undefined) {
    textChoices.unshift(["", "— choose the column with the reviews —"]);
    info += " · no 'text' or 'review' column: choose the one that holds the reviews";
    chosen.needsTextColumn = true;
  }
  fillSelect(textSelect, textChoices, guess === undefined ? "" : columns[guess]);
  // An id-like column (id, review_id, ...) is the id, as the server does by default.
  const idGuess = lowered.findIndex((c) => c === "id" || c.endsWith("_id"));
  fillSelect(
    idSelect,
    [["", "(row number)"], ...columns.map((c) => [c, c])],
    idGuess >= 0 ? columns[idGuess] : "",
  );
  // No choice: the server takes a 'label', 'sentiment', ... column if the file has one.
  fillSelect(labelSelect, [["", "(detect)"], ...columns.map((c) => [c, c])], "");
  textSelect.disabled = idSelect.disabled = labelSelect.disabled = false;
  show($("file-info"), info);
  updateUploadButton();
}

// ---------------------------------------------------------------- upload ----

function upload(event) {
  event.preventDefault();
  const file = $("csv-file").files[0];
  if (!file) return;
  const params = new URLSearchParams();
  const options = {
    text_column: $("text-column").value,
    id_column: $("id-column").value,
    model: $("bulk-model").value,
    encoding: $("encoding").disabled ? "" : $("encoding").value,
    delimiter: $("delimiter").disabled ? "" : $("delimiter").value,
    label_column: $("label-column").value,
    deadline: $("job-deadline").value.trim(),
    callback_url: $("callback-url").value.trim(),
  };
  // Options go in the query: the server reads them before the file arrives.
  for (const [name, value] of Object.entries(options)) if (value) params.set(name, value);
  // One `label=key:value` per label; the server checks each and says which is wrong.
  for (const pair of $("job-labels-input").value.split(",")) {
    if (pair.trim()) params.append("label", pair.trim());
  }
  const form = new FormData();
  form.append("file", file, file.name);

  const xhr = new XMLHttpRequest();
  const query = params.toString();
  xhr.open("POST", query ? `/v1/jobs?${query}` : "/v1/jobs");
  xhr.setRequestHeader("Accept", "application/json");
  for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);

  const button = $("upload-button");
  button.disabled = true;
  button.textContent = "Uploading…";
  hide($("upload-error"));
  hide($("job-panel"));
  $("upload-bar").style.width = "0%";
  show($("upload-text"), `Uploading ${file.name}…`);
  $("upload-progress").hidden = false;

  xhr.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable) return;
    const share = e.loaded / e.total;
    $("upload-bar").style.width = `${(share * 100).toFixed(1)}%`;
    $("upload-text").textContent =
      share < 1
        ? `Uploading ${file.name}: ${Math.floor(share * 100)}% of ${formatBytes(file.size)}`
        : `Uploaded ${formatBytes(file.size)}; the server is storing the last rows…`;
  });
  const finish = () => {
    button.textContent = "Upload and score";
    updateUploadButton();
    hide($("upload-progress"));
  };
  xhr.addEventListener("load", () => {
    finish();
    const body = parseJson(xhr.responseText);
    if (xhr.status === 401) {
      const message = describeError(401, body, xhr.statusText);
      askForKey(message);
      show($("upload-error"), message);
    } else if (xhr.status >= 200 && xhr.status < 300 && body && body.id) {
      followJob(body);
      loadJobs();
    } else {
      show($("upload-error"), describeError(xhr.status, body, xhr.statusText));
    }
  });
  xhr.addEventListener("error", () => {
    finish();
    show($("upload-error"), "the upload failed: the connection to the server was lost");
  });
  xhr.send(form);
}

// ---------------------------------------------------------------- job progress ----

let followed = null; // {id, timer}

function formatDuration(seconds) {
  if (seconds < 1) return "under a second";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function formatRate(rate) {
  return rate >= 100 ? numberFormat.format(Math.round(rate)) : rate.toFixed(1);
}

// The API's times are UTC ("...Z"); one without a zone is read as UTC too, never as local.
function parseUtc(value) {
  if (typeof value !== "string" || !value) return null;
  const zoned = /(Z|[+-]\d\d:?\d\d)$/i.test(value) ? value : `${value}Z`;
  const moment = new Date(zoned);
  return Number.isNaN(moment.getTime()) ? null : moment;
}

// In the browser's time zone, as YYYY-MM-DD HH:MM.
function localTime(value) {
  const moment = parseUtc(value);
  if (!moment) return value || "";
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())} ` +
    `${pad(moment.getHours())}:${pad(moment.getMinutes())}`
  );
}

function humanName(key) {
  return String(key).replace(/_/g, " ");
}

function formatValue(key, value) {
  if (typeof value !== "number") return String(value);
  if (/share|fraction|ratio|rate/.test(key) && value >= 0 && value <= 1) return `${(value * 100).toFixed(1)} %`;
  return Number.isInteger(value) ? numberFormat.format(value) : value.toFixed(3);
}

// A histogram: a list of counts, or of {count} bins (with from/to or lo/hi bounds).
function histogram(values) {
  const counts = values.map((v) => (v && typeof v === "object" ? Number(v.count ?? v.n ?? 0) : Number(v)));
  if (!counts.length || counts.some((c) => !Number.isFinite(c))) return null;
  const most = Math.max(...counts, 1);
  const chart = document.createElement("div");
  chart.className = "histogram";
  chart.setAttribute("role", "img");
  chart.setAttribute("aria-label", `histogram: ${counts.join(", ")}`);
  counts.forEach((count, i) => {
    const bar = document.createElement("span");
    bar.style.height = `${Math.max((count / most) * 100, count ? 4 : 0)}%`;
    const bin = values[i];
    const low = bin && typeof bin === "object" ? bin.from ?? bin.lo ?? bin.low : undefined;
    const high = bin && typeof bin === "object" ? bin.to ?? bin.hi ?? bin.high : undefined;
    bar.title = low !== undefined ? `${low}–${high}: ${numberFormat.format(count)}` : numberFormat.format(count);
    chart.append(bar);
  });
  return chart;
}

const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
}

function figureText(figure, asPercent = true) {
  if (!figure || figure.value === null) return "–";
  const show = asPercent ? percent : (v) => v.toFixed(3);
  return `${show(figure.value)} (95 %: ${show(figure.low)} – ${show(figure.high)})`;
}

// The reliability diagram: per p_positive bin, the share of its rows labeled positive (with
// its 95 % interval) against the bin's mean score; on the diagonal a model is calibrated.
function reliabilityDiagram(bins) {
  const size = 220;
  const pad = 28;
  const scale = (v) => pad + v * (size - 2 * pad);
  const flip = (v) => size - scale(v);
  const svg = svgElement("svg", {
    viewBox: `0 0 ${size} ${size}`, width: size, height: size, class: "reliability",
    role: "img", "aria-label": "reliability diagram: share labeled positive by mean p_positive",
  });
  svg.append(svgElement("rect", {
    x: scale(0), y: flip(1), width: scale(1) - scale(0), height: flip(0) - flip(1),
    fill: "none", stroke: "currentColor", "stroke-opacity": 0.3,
  }));
  svg.append(svgElement("line", {
    x1: scale(0), y1: flip(0), x2: scale(1), y2: flip(1),
    stroke: "currentColor", "stroke-opacity": 0.4, "stroke-dasharray": "4 3",
  }));
  for (const tick of [0, 0.5, 1]) {
    const below = svgElement("text", { x: scale(tick), y: size - 8, "text-anchor": "middle", "font-size": 10 });
    below.textContent = String(tick);
    const left = svgElement("text", { x: pad - 6, y: flip(tick) + 3, "text-anchor": "end", "font-size": 10 });
    left.textContent = String(tick);
    svg.append(below, left);
  }
  const most = Math.max(...bins.map((b) => b.count), 1);
  for (const bin of bins) {
    if (!bin.count || bin.mean_p === null) continue;
    const share = bin.share_positive;
    const x = scale(bin.mean_p);
    svg.append(svgElement("line", {
      x1: x, x2: x, y1: flip(share.low), y2: flip(share.high), stroke: "currentColor", "stroke-opacity": 0.6,
    }));
    const dot = svgElement("circle", {
      cx: x, cy: flip(share.value), r: 2.5 + 4 * Math.sqrt(bin.count / most), class: "bin",
    });
    const title = svgElement("title", {});
    title.textContent = `p ${bin.low.toFixed(1)}–${bin.high.toFixed(1)}: ${numberFormat.format(bin.count)} rows, ` +
      `mean p ${bin.mean_p.toFixed(3)}, labeled positive ${percent(share.value)}`;
    dot.append(title);
    svg.append(dot);
  }
  return svg;
}

// The evaluation against the file's labels: figures with their intervals, the confusion
// matrix, the reliability diagram and accuracy by review length.
function renderEvaluation(evaluation) {
  const box = document.createElement("div");
  box.className = "evaluation";
  const left = Object.entries(evaluation.left_out || {}).filter(([, n]) => n)
    .map(([k, n]) => `${numberFormat.format(n)} ${humanName(k)}`);
  const intro = document.createElement("p");
  intro.textContent = `${numberFormat.format(evaluation.rows)} labeled rows` +
    (left.length ? ` (left out: ${left.join(", ")})` : "");
  const table = document.createElement("table");
  const rows = [
    ["accuracy", figureText(evaluation.accuracy)],
    ["precision", figureText(evaluation.precision)],
    ["recall", figureText(evaluation.recall)],
    ["F1", figureText(evaluation.f1)],
    ["ROC AUC", figureText(evaluation.roc_auc, false)],
    ["ECE", figureText(evaluation.ece, false)],
  ];
  const c = evaluation.confusion;
  rows.push(["confusion", `TP ${c.true_positive} · FP ${c.false_positive} · TN ${c.true_negative} · FN ${c.false_negative}`]);
  for (const bin of evaluation.by_length || []) {
    const words = bin.words_to === null ? `${bin.words_from}+ words` : `${bin.words_from}–${bin.words_to} words`;
    rows.push([`accuracy, ${words}`, `${figureText(bin.accuracy)} · ${numberFormat.format(bin.count)} rows`]);
  }
  for (const [name, value] of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = name;
    const td = document.createElement("td");
    td.textContent = value;
    tr.append(th, td);
    table.append(tr);
  }
  const caption = document.createElement("p");
  caption.className = "caption";
  caption.textContent = "Reliability: the share of each p_positive bin labeled positive (95 % " +
    "interval) against the bin's mean p_positive; a calibrated model sits on the diagonal.";
  box.append(intro, table, reliabilityDiagram(evaluation.calibration || []), caption);
  return box;
}

// The job's results summary, whatever its exact shape: numbers, counts by name, histograms.
function renderSummary(summary) {
  const box = $("job-summary");
  box.replaceChildren();
  if (!summary || typeof summary !== "object") {
    box.hidden = true;
    return;
  }
  const title = document.createElement("h3");
  title.textContent = "Summary";
  const list = document.createElement("dl");
  const add = (key, content) => {
    const dt = document.createElement("dt");
    dt.textContent = humanName(key);
    const dd = document.createElement("dd");
    if (typeof content === "string") dd.textContent = content;
    else dd.append(content);
    list.append(dt, dd);
  };
  for (const [key, value] of Object.entries(summary)) {
    if (value === null || value === undefined) continue;
    if (key === "evaluation") {
      add(key, renderEvaluation(value));
      continue;
    }
    if (Array.isArray(value)) {
      const chart = histogram(value);
      add(key, chart || value.map(String).join(", "));
    } else if (typeof value === "object") {
      const inner = Object.entries(value);
      // A histogram object ({edges, counts}) is drawn from its counts.
      const nestedList = Array.isArray(value.counts)
        ? ["counts", value.counts]
        : inner.find(([, v]) => Array.isArray(v));
      if (nestedList && histogram(nestedList[1])) add(key, histogram(nestedList[1]));
      else add(key, inner.map(([k, v]) => `${humanName(k)} ${typeof v === "object" ? JSON.stringify(v) : formatValue(k, v)}`).join(" · ") || "none");
    } else {
      add(key, formatValue(key, value));
    }
  }
  box.append(title, list);
  box.hidden = !list.children.length;
}

function resultsUrl(job) {
  return `${job.results_url}?format=csv`;
}

function renderJob(job) {
  $("job-title").textContent = job.filename || `job ${job.id.slice(0, 8)}`;
  $("job-title").title = `job ${job.id}`;
  const badge = $("job-status");
  badge.textContent = job.status;
  badge.className = `badge badge-${job.status}`;
  const share = job.total ? job.done / job.total : 0;
  $("job-bar").style.width = `${(Math.min(share, 1) * 100).toFixed(1)}%`;
  $("job-bar").className = `fill fill-${job.status}`;

  const parts = [];
  if (job.total === null) {
    parts.push(`${numberFormat.format(job.received)} rows received so far`);
    if (job.done) parts.push(`${numberFormat.format(job.done)} scored`);
  } else {
    parts.push(`${numberFormat.format(job.done)} / ${numberFormat.format(job.total)} rows scored`);
  }
  if (job.failed) parts.push(`${numberFormat.format(job.failed)} failed`);
  if (job.rate) parts.push(`${formatRate(job.rate)} rows/s`);
  if (!job.finished && job.eta_seconds !== null && job.eta_seconds !== undefined) {
    parts.push(`ETA ${formatDuration(job.eta_seconds)}`);
  }
  if (job.finished && job.started_at && job.finished_at) {
    const took = (parseUtc(job.finished_at) - parseUtc(job.started_at)) / 1000;
    if (took >= 0) parts.push(`took ${formatDuration(took)}`);
  }
  parts.push(`model ${job.model_version}`);
  $("job-progress").textContent = parts.join(" · ");
  const times = [`created ${localTime(job.created_at)}`];
  if (job.finished_at) times.push(`finished ${localTime(job.finished_at)}`);
  else if (job.deadline_at) times.push(`deadline ${localTime(job.deadline_at)}`);
  $("job-times").textContent = times.join(" · ");
  $("job-times").title = `created ${job.created_at} (UTC)`;
  const labels = labelChips(job.metadata);
  $("job-labels").replaceChildren(...labels);
  $("job-labels").hidden = labels.length === 0;
  renderSummary(job.summary);
  renderWebhook(job);

  if (job.error) show($("job-error"), job.error);
  else hide($("job-error"));
  $("cancel-job").hidden = job.finished;
  const link = $("download-link");
  if (job.finished) {
    link.href = resultsUrl(job);
    link.setAttribute("download", `${job.id}-results.csv`);
    link.hidden = false;
  } else {
    link.hidden = true;
    link.removeAttribute("href");
  }
}

// The completion webhook's state (GET /v1/jobs/{id}/deliveries), asked again while pending.
async function renderWebhook(job) {
  const line = $("job-webhook");
  if (!job.callback_url) {
    line.hidden = true;
    return;
  }
  line.hidden = false;
  if (!job.finished) {
    line.textContent = `webhook to ${job.callback_url} once the job is finished`;
    return;
  }
  let found;
  try {
    found = await api(`/v1/jobs/${job.id}/deliveries`);
  } catch (error) {
    line.textContent = `webhook to ${job.callback_url}: ${error.message}`;
    return;
  }
  if (!followed || followed.id !== job.id) return;
  const event = found.event;
  const tries = event ? `${event.attempts} attempt${event.attempts === 1 ? "" : "s"}` : "";
  if (!event) line.textContent = `webhook to ${job.callback_url}: not sent yet`;
  else if (event.state === "delivered") {
    line.textContent = `webhook ${event.type} delivered to ${job.callback_url} (${tries})`;
  } else if (event.state === "gave_up") {
    line.textContent = `webhook ${event.type} not delivered: ${event.error}`;
  } else {
    const next = event.next_attempt_at ? `; next try ${localTime(event.next_attempt_at)}` : "";
    line.textContent = `webhook ${event.type} pending (${event.error || tries}${next})`;
  }
  if (!event || event.state === "pending") {
    clearTimeout(followed.webhookTimer);
    followed.webhookTimer = setTimeout(() => renderWebhook(job), 5000);
  }
}

function followJob(job) {
  if (followed) {
    clearTimeout(followed.timer);
    clearTimeout(followed.webhookTimer);
  }
  followed = { id: job.id, timer: null, webhookTimer: null };
  $("job-panel").hidden = false;
  renderJob(job);
  // A finished job from the list has no summary (lists never compute it): ask for the job.
  if (job.finished && !job.summary) pollJob(job.id);
  else if (!job.finished) followed.timer = setTimeout(() => pollJob(job.id), JOB_POLL_MS);
}

async function pollJob(id) {
  if (!followed || followed.id !== id) return;
  try {
    const job = await api(`/v1/jobs/${id}`);
    if (!followed || followed.id !== id) return;
    renderJob(job);
    if (job.finished) {
      loadJobs();
      return;
    }
  } catch (error) {
    show($("job-error"), error.message);
    if (error.status === 404 || error.status === 401) return;
  }
  followed.timer = setTimeout(() => pollJob(id), JOB_POLL_MS);
}

async function cancelFollowed() {
  if (!followed) return;
  try {
    renderJob(await api(`/v1/jobs/${followed.id}/cancel`, { method: "POST" }));
    loadJobs();
  } catch (error) {
    show($("job-error"), error.message);
  }
}

// A plain link cannot send the API key: with a key, fetch the file and save it from memory.
async function downloadWithKey(event) {
  const link = event.target.closest("a.results-link");
  if (!link || !link.href || !apiKey()) return;
  event.preventDefault();
  try {
    const response = await fetch(link.href, { headers: authHeaders() });
    if (!response.ok) {
      const message = describeError(response.status, parseJson(await response.text()), response.statusText);
      if (response.status === 401) askForKey(message);
      throw new Error(message);
    }
    const url = URL.createObjectURL(await response.blob());
    const save = document.createElement("a");
    save.href = url;
    save.download = link.getAttribute("download") || "results.csv";
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    show($("banner"), `download failed: ${error.message}`);
  }
}

// ---------------------------------------------------------------- recent jobs ----

function cell(label, text, className) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (className) td.className = className;
  if (text !== undefined) td.textContent = text;
  return td;
}

async function deleteJob(job) {
  const name = job.filename || `job ${job.id.slice(0, 8)}`;
  if (!window.confirm(`Delete ${name} (job ${job.id}) with its results?`)) return;
  try {
    await api(`/v1/jobs/${job.id}`, { method: "DELETE" });
    if (followed && followed.id === job.id) {
      clearTimeout(followed.timer);
      followed = null;
      hide($("job-panel"));
    }
  } catch (error) {
    show($("banner"), `delete failed: ${error.message}`);
  }
  loadJobs();
}

function jobActions(job) {
  const actions = cell("", undefined, "row-actions");
  if (job.finished) {
    const details = document.createElement("button");
    details.type = "button";
    details.className = "link";
    details.textContent = "details";
    details.setAttribute("aria-label", `details of job ${job.id}`);
    details.addEventListener("click", () => {
      followJob(job);
      $("job-panel").scrollIntoView({ block: "nearest" });
    });
    actions.append(details);
    const link = document.createElement("a");
    link.className = "results-link";
    link.href = resultsUrl(job);
    link.setAttribute("download", `${job.id}-results.csv`);
    link.textContent = "results";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link danger";
    remove.textContent = "delete";
    remove.setAttribute("aria-label", `delete job ${job.id}`);
    remove.addEventListener("click", () => deleteJob(job));
    actions.append(link, remove);
  } else {
    const follow = document.createElement("button");
    follow.type = "button";
    follow.className = "link";
    follow.textContent = "follow";
    follow.addEventListener("click", () => followJob(job));
    actions.append(follow);
  }
  return actions;
}

// A job's labels (its `metadata`) as small chips "key: value"; text only, never markup.
function labelChips(metadata) {
  return Object.entries(metadata || {}).map(([key, value]) => {
    const chip = document.createElement("span");
    chip.className = "label-chip";
    chip.textContent = value === "" ? key : `${key}: ${value}`;
    return chip;
  });
}

function renderJobs(list) {
  const body = $("jobs-body");
  body.replaceChildren();
  for (const job of list.jobs) {
    const row = document.createElement("tr");
    row.dataset.jobId = job.id;
    const created = cell("Created", localTime(job.created_at), "created");
    created.title = `${job.created_at} (UTC)`;
    row.append(created);
    const file = cell("File", job.filename || "—", "file");
    file.title = `job ${job.id}`;
    const chips = labelChips(job.metadata);
    if (chips.length) {
      const holder = document.createElement("span");
      holder.className = "labels";
      holder.append(...chips);
      file.append(holder);
    }
    row.append(file);
    const status = cell("Status", undefined, "status");
    const badge = document.createElement("span");
    badge.className = `badge badge-${job.status}`;
    badge.textContent = job.status;
    status.append(badge);
    row.append(status);
    const total = job.total === null ? "?" : numberFormat.format(job.total);
    row.append(cell("Rows done", `${numberFormat.format(job.done)} / ${total}`, "num rows"));
    row.append(cell("Model", job.model_version, "model"));
    row.append(jobActions(job));
    body.append(row);
  }
  $("jobs-empty").textContent = "No jobs yet.";
  $("jobs-empty").hidden = list.jobs.length > 0;
  $("jobs-table").hidden = list.jobs.length === 0;
}

let jobsTimer = null;

async function loadJobs() {
  clearTimeout(jobsTimer);
  if (!document.hidden) {
    try {
      renderJobs(await api("/v1/jobs?limit=10"));
    } catch (error) {
      $("jobs-empty").textContent = `The jobs cannot be listed: ${error.message}`;
      $("jobs-empty").hidden = false;
      $("jobs-table").hidden = true;
      // Without a key there is nothing to refresh; saving one lists the jobs again.
      if (error.status === 401) return;
    }
  }
  clearTimeout(jobsTimer);
  jobsTimer = setTimeout(loadJobs, JOBS_REFRESH_MS);
}

// ---------------------------------------------------------------- start ----

document.addEventListener("DOMContentLoaded", () => {
  setupKeyForm();
  setupSingle();
  $("csv-file").addEventListener("change", onFileChosen);
  $("text-column").addEventListener("change", updateUploadButton);
  // A different encoding or separator changes how the header reads: read it again.
  $("encoding").addEventListener("change", onFileChosen);
  $("delimiter").addEventListener("change", onFileChosen);
  $("upload-form").addEventListener("submit", upload);
  $("cancel-job").addEventListener("click", cancelFollowed);
  $("refresh-jobs").addEventListener("click", loadJobs);
  document.addEventListener("click", downloadWithKey);
  checkReady();
  loadModels();
  loadJobs();
});
