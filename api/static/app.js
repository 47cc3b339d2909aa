// The /ui page: calls the public HTTP API of this server only (see api/ui.py).
"use strict";

const KEY_STORAGE = "reviewscore.apiKey";
const HEAD_BYTES = 64 * 1024;
const JOB_POLL_MS = 1000;
const JOBS_REFRESH_MS = 5000;
const READY_RECHECK_MS = 10000;

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

// The API answers errors as {"detail": "..."}; validation errors as {"detail": [{loc, msg}]}.
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

async function checkReady() {
  const pill = $("service-status");
  let state = null;
  try {
    const response = await fetch("/readyz", { headers: { Accept: "application/json" } });
    state = parseJson(await response.text());
  } catch {
    state = null;
  }
  let ready = false;
  if (!state || typeof state.ready !== "boolean") {
    pill.className = "pill pill-bad";
    pill.textContent = "not reachable";
    show($("banner"), "service not ready: the API cannot be reached");
  } else if (!state.ready) {
    const reasons = notReadyReasons(state);
    pill.className = "pill pill-bad";
    pill.textContent = "not ready";
    show($("banner"), `service not ready: ${reasons.join("; ") || "unknown reason"}`);
  } else {
    ready = true;
    const workers = state.workers.length;
    pill.className = "pill pill-ok";
    pill.textContent = `ready · ${workers} worker${workers === 1 ? "" : "s"}`;
    hide($("banner"));
  }
  setTimeout(checkReady, ready ? READY_RECHECK_MS * 3 : READY_RECHECK_MS);
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
        body: JSON.stringify({ reviews: [text.value] }),
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

// The first record of a CSV (quoted fields may hold commas and line breaks), as the server
// reads it; null when the header does not end within the bytes read.
function parseHeader(text, wholeFile) {
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
    } else if (c === ",") {
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

async function onFileChosen() {
  const file = $("csv-file").files[0];
  const textSelect = $("text-column");
  const idSelect = $("id-column");
  hide($("upload-error"));
  hide($("upload-progress"));
  textSelect.disabled = idSelect.disabled = true;
  $("upload-button").disabled = !file;
  if (!file) {
    hide($("file-info"));
    textSelect.replaceChildren();
    idSelect.replaceChildren();
    return;
  }
  let columns = null;
  try {
    const bytes = await readHeadBytes(file);
    if (bytes) {
      const text = new TextDecoder("utf-8").decode(bytes);
      columns = parseHeader(text, file.size <= HEAD_BYTES && bytes.length < HEAD_BYTES);
    }
  } catch {
    columns = null;
  }
  if (!columns || !columns.length) {
    // The server still reads the header itself and says what is wrong.
    show($("file-info"), `${file.name} · ${formatBytes(file.size)} · the header row could not be read here; the server picks 'text', else 'review'`);
    fillSelect(textSelect, [["", "(server default)"]], "");
    fillSelect(idSelect, [["", "(row number)"]], "");
    return;
  }
  const lowered = columns.map((c) => c.toLowerCase());
  const guess = ["text", "review"].map((name) => lowered.indexOf(name)).find((i) => i >= 0);
  const textChoices = columns.map((c) => [c, c]);
  let info = `${file.name} · ${formatBytes(file.size)} · ${columns.length} column${columns.length === 1 ? "" : "s"}`;
  if (guess === undefined) {
    textChoices.unshift(["", "— choose the column with the reviews —"]);
    info += " · no 'text' or 'review' column: choose the one that holds the reviews";
  }
  fillSelect(textSelect, textChoices, guess === undefined ? "" : columns[guess]);
  const idGuess = lowered.indexOf("id");
  fillSelect(
    idSelect,
    [["", "(row number)"], ...columns.map((c) => [c, c])],
    idGuess >= 0 ? columns[idGuess] : "",
  );
  textSelect.disabled = idSelect.disabled = false;
  show($("file-info"), info);
}

// ---------------------------------------------------------------- upload ----

function upload(event) {
  event.preventDefault();
  const file = $("csv-file").files[0];
  if (!file) return;
  const params = new URLSearchParams();
  if ($("text-column").value) params.set("text_column", $("text-column").value);
  if ($("id-column").value) params.set("id_column", $("id-column").value);
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
    button.disabled = false;
    button.textContent = "Upload and score";
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
    const took = (Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000;
    if (took >= 0) parts.push(`took ${formatDuration(took)}`);
  }
  parts.push(`model version ${job.model_version}`);
  $("job-progress").textContent = parts.join(" · ");

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

function followJob(job) {
  if (followed) clearTimeout(followed.timer);
  followed = { id: job.id, timer: null };
  $("job-panel").hidden = false;
  renderJob(job);
  if (!job.finished) followed.timer = setTimeout(() => pollJob(job.id), JOB_POLL_MS);
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

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text !== undefined) td.textContent = text;
  return td;
}

function renderJobs(list) {
  const body = $("jobs-body");
  body.replaceChildren();
  for (const job of list.jobs) {
    const row = document.createElement("tr");
    row.dataset.jobId = job.id;
    const created = new Date(job.created_at);
    row.append(cell(Number.isNaN(created.getTime()) ? job.created_at : created.toLocaleString()));
    const file = cell(job.filename || "—", "file");
    file.title = `job ${job.id}`;
    row.append(file);
    const status = cell();
    const badge = document.createElement("span");
    badge.className = `badge badge-${job.status}`;
    badge.textContent = job.status;
    status.append(badge);
    row.append(status);
    const total = job.total === null ? "?" : numberFormat.format(job.total);
    row.append(cell(`${numberFormat.format(job.done)} / ${total}`, "num"));
    row.append(cell(job.model_version, "model"));
    const actions = cell(undefined, "row-actions");
    if (job.finished) {
      const link = document.createElement("a");
      link.className = "results-link";
      link.href = resultsUrl(job);
      link.setAttribute("download", `${job.id}-results.csv`);
      link.textContent = "results";
      actions.append(link);
    } else {
      const follow = document.createElement("button");
      follow.type = "button";
      follow.className = "link";
      follow.textContent = "follow";
      follow.addEventListener("click", () => followJob(job));
      actions.append(follow);
    }
    row.append(actions);
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
  $("upload-form").addEventListener("submit", upload);
  $("cancel-job").addEventListener("click", cancelFollowed);
  $("refresh-jobs").addEventListener("click", loadJobs);
  document.addEventListener("click", downloadWithKey);
  checkReady();
  loadJobs();
});
