// The settings page of llamaship (no build step, no dependencies).
// The admin token comes from the desktop shell in the URL fragment (/settings#token=...), which
// the browser never sends to the server; it is kept in sessionStorage for this tab only and sent
// as "Authorization: Bearer" on admin calls. Text from the server is set with textContent only.
"use strict";

const TOKEN_KEY = "llamaship-admin-token";
const POLL_MS = 300;
const RESTART_TIMEOUT_MS = 180000;

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let token = null;
let current = { caps: null, settings: null, models: null };
let quickRunning = false;

function takeToken() {
  const match = /(?:^#|&)token=([0-9a-fA-F]{16,256})(?:&|$)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, match[1]);
    // Out of the address bar and the history entry.
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = {};
  if (options.admin !== false && token) headers.Authorization = `Bearer ${token}`;
  const init = { method: options.method || "GET", headers, cache: "no-store" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const reply = await fetch(path, init);
  let data = null;
  try {
    data = await reply.json();
  } catch {
    data = null;
  }
  if (!reply.ok) {
    const message = data && data.error ? data.error.message : `${reply.status} ${reply.statusText}`;
    throw new ApiError(message);
  }
  return data;
}

function say(id, text) {
  $(id).textContent = text;
}

function notice(text) {
  say("notice", text || "");
  $("notice").hidden = !text;
}

function megabytes(bytes) {
  if (bytes === null || bytes === undefined) return "unknown size";
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function gibibytes(mib) {
  return `${(mib / 1024).toFixed(1)} GiB`;
}

function gpuActive(caps) {
  return caps.llama_cpp.variant !== "cpu" && caps.llama_cpp.gpu_offload === true;
}

function showGpu(caps) {
  const gpus = caps.gpus || [];
  const detection = caps.detection;
  const vulkan = (detection.vulkan && detection.vulkan.devices) || [];
  if (gpus.length === 0 && vulkan.length > 0) {
    say("gpu-name", vulkan.map((device) =>
      `${device.name} (Vulkan ${device.api_version}, ${device.device_type})`).join(", "));
    say("gpu-vram", vulkan.map((device) => gibibytes(device.memory_mb)).join(", "));
  } else if (gpus.length === 0) {
    const why = (detection.errors || []).join("; ");
    say("gpu-name", why ? `none detected (${why})` : "none detected");
    say("gpu-vram", "—");
  } else {
    say("gpu-name", gpus.map((gpu) => `${gpu.name} (compute ${gpu.compute_capability})`).join(", "));
    say("gpu-vram", gpus.map((gpu) =>
      `${gibibytes(gpu.vram_total_mb)} (${gibibytes(gpu.vram_free_mb)} free)`).join(", "));
  }
  const driver = detection.driver_version;
  const cuda = detection.cuda_driver_version;
  say("gpu-driver", driver ? (cuda ? `${driver} (CUDA ${cuda})` : driver) : "not found");
  const active = gpuActive(caps);
  const cell = $("cuda-active");
  cell.dataset.active = String(active);
  cell.className = active ? "yes" : "no";
  if (active) {
    cell.textContent = caps.llama_cpp.variant === "vulkan" ? "Yes: Vulkan" : "Yes: CUDA";
  } else if (caps.llama_cpp.variant === "cuda") {
    cell.textContent = "No: the CUDA build is loaded but CUDA offloads nothing";
  } else {
    cell.textContent = "No: running on the CPU";
  }
  const llama = caps.llama_cpp;
  say("llama-variant", `${llama.version}, ${llama.variant} build` +
    (llama.cpu_backend ? ` (CPU code: ${llama.cpu_backend})` : ""));
  const overlay = caps.overlay;
  if (overlay.version) {
    say("overlay-version", `${overlay.version} installed, in use`);
  } else if (overlay.installed) {
    say("overlay-version", `${overlay.installed} installed, not in use (see "Why")`);
  } else {
    say("overlay-version", "none");
  }
  say("decision-reason", caps.decision.reason);
}

// The measured choice: a GPU build timed against the CPU build once the server is up.
let measureWatched = false;

function showMeasurement(caps) {
  const measurement = caps.measurement;
  $("measure").hidden = !measurement || measurement.state === "idle";
  if ($("measure").hidden) return;
  $("measure-progress").hidden = measurement.state !== "running";
  $("measure-progress").value = measurement.progress;
  const prefix = { running: "Measuring: ", failed: "The measurement failed: " };
  say("measure-message", (prefix[measurement.state] || "") + measurement.message);
  if (measurement.restart_advised) {
    const build = measurement.next_variant === "cpu" ? "CPU" : measurement.next_variant;
    needRestart(`Restart the app to run the ${build} build, as measured above.`);
  }
  if (measurement.state === "running" && !measureWatched) watchMeasurement();
}

async function watchMeasurement() {
  measureWatched = true;
  try {
    let caps;
    do {
      await sleep(1000);
      caps = await api("/api/capabilities", { admin: false });
      showMeasurement(caps);
    } while (caps.measurement && caps.measurement.state === "running");
  } catch (error) {
    say("measure-message", `Cannot follow the measurement: ${error.message}`);
  } finally {
    measureWatched = false;
  }
}

function showUpgrade(caps, settings) {
  const section = $("upgrade");
  section.hidden = !caps.decision.upgrade_available && $("upgrade-job").hidden;
  if (section.hidden) return;
  const declined = settings.gpu_upgrade_consent === "never";
  $("upgrade-declined").hidden = !declined;
  $("upgrade-offer").hidden = declined || !$("upgrade-job").hidden;
  if (!declined && token) loadOffer();
}

async function loadOffer() {
  try {
    const offer = await api("/api/admin/upgrade-gpu");
    const size = offer.download_bytes > 0
      ? `Download size: ${megabytes(offer.download_bytes)} ` +
        `(${megabytes(offer.unpacked_bytes)} on disk)`
      : "Nothing to download: the layers are already here.";
    say("upgrade-size", size);
    const backend = offer.kind === "vulkan" ? "Vulkan" : `CUDA ${offer.cuda_version}`;
    say("upgrade-text", `Install the GPU build of llama.cpp (overlay ${offer.overlay_version}, ` +
      `${backend}) so that models run on your graphics card.`);
  } catch (error) {
    say("upgrade-size", `The upgrade cannot be offered: ${error.message}`);
  }
}

function showSettings(settings) {
  for (const radio of document.querySelectorAll('input[name="offload"]')) {
    radio.checked = radio.value === settings.offload_mode;
  }
  $("offload-layers").value = settings.offload_layers === null ? "" : settings.offload_layers;
}

function showModels(models, caps) {
  const select = $("model-select");
  const chosen = select.value;
  select.replaceChildren();
  for (const model of models.models) {
    const option = document.createElement("option");
    option.value = model.name;
    const parts = [model.name];
    if (model.purpose) parts.push(model.purpose);
    parts.push(megabytes(model.size ?? model.installed_size));
    if (model.installed) parts.push("downloaded");
    if (model.active) parts.push("chosen");
    if (model.unverified) parts.push("unverified");
    option.textContent = parts.join(" · ");
    select.append(option);
  }
  const active = models.models.find((model) => model.active);
  select.value = chosen || (active ? active.name : select.value);
  say("model-serving", caps.model.id ? caps.model.id : "no model yet: download one below");
  showQuickStart(models, caps);
  updateModelButtons();
}

function defaultChat(models) {
  return models.models.find((model) => model.name === models.default_chat);
}

// No model in use: one button downloads the default chat model, verifies it and serves it.
function showQuickStart(models, caps) {
  const model = defaultChat(models);
  const busy = !$("model-job").hidden;
  $("model-quick").hidden = Boolean(caps.model.id) || !model || (busy && !quickRunning);
  if ($("model-quick").hidden) return;
  const size = model.size ? `, ${megabytes(model.size)}` : "";
  say("model-quick-text", `No model yet. Download ${model.name} (${model.purpose}${size}), ` +
    "check it against its publisher's sha256 and start using it.");
  $("model-quick-button").disabled = !token || busy;
}

async function quickStart() {
  const model = current.models ? defaultChat(current.models) : null;
  if (!model) return;
  quickRunning = true;
  await pullModel(model);
  quickRunning = false;
}

function selectedModel() {
  const models = current.models ? current.models.models : [];
  return models.find((model) => model.name === $("model-select").value);
}

function updateModelButtons() {
  const model = selectedModel();
  const busy = !$("model-job").hidden;
  $("model-pull").disabled = !token || busy || !model || model.installed || !model.in_catalogue;
  $("model-use").disabled = !token || busy || !model || !model.installed || model.active;
}

function showBenchmark(caps) {
  say("bench-summary", caps.benchmark ? caps.benchmark.summary : "not measured yet");
  $("bench-run").disabled = !token || !caps.model.id;
  if (!caps.model.id) say("bench-message", "Download and use a model first.");
}

async function refresh() {
  const [caps, settings, models] = await Promise.all([
    api("/api/capabilities", { admin: false }),
    api("/api/settings", { admin: false }),
    api("/api/models", { admin: false }),
  ]);
  current = { caps, settings: settings.settings, models };
  showGpu(caps);
  showMeasurement(caps);
  showUpgrade(caps, settings.settings);
  showSettings(settings.settings);
  showModels(models, caps);
  showBenchmark(caps);
  document.body.dataset.loaded = "true";
}

function needRestart(why) {
  say("restart-why", why);
  say("restart-message", "");
  $("restart").hidden = false;
  $("restart-button").disabled = !token;
}

async function saveSettings(change) {
  return api("/api/settings", { method: "POST", body: change });
}

async function pollJob(path, progressId, onProgress) {
  for (;;) {
    const job = await api(path);
    const bar = $(progressId);
    if (job.bytes_total > 0) {
      bar.max = job.bytes_total;
      bar.value = job.bytes_done;
    } else {
      bar.removeAttribute("value");
    }
    onProgress(job);
    if (job.state !== "running") return job;
    await sleep(POLL_MS);
  }
}

async function upgrade() {
  $("upgrade-offer").hidden = true;
  $("upgrade-job").hidden = false;
  say("upgrade-message", "Starting the upgrade…");
  try {
    await saveSettings({ gpu_upgrade_consent: "enable" });
    const started = await api("/api/admin/upgrade-gpu", { method: "POST" });
    const job = await pollJob(`/api/admin/upgrade-gpu/${started.job_id}`, "upgrade-progress",
      (progress) => {
        const bytes = progress.bytes_total > 0
          ? ` (${megabytes(progress.bytes_done)} of ${megabytes(progress.bytes_total)})` : "";
        say("upgrade-message", `${progress.phase}: ${progress.message}${bytes}`);
      });
    if (job.state === "succeeded" && job.restart_required) {
      needRestart("The GPU overlay is installed. Restart the app to use it.");
    } else if (job.state === "failed") {
      say("upgrade-message", `The upgrade failed: ${job.message}`);
    }
  } catch (error) {
    say("upgrade-message", `The upgrade failed: ${error.message}`);
  }
}

async function answerLater(consent) {
  try {
    const reply = await saveSettings({ gpu_upgrade_consent: consent });
    current.settings = reply.settings;
    $("upgrade-offer").hidden = true;
    if (consent === "never") {
      $("upgrade-declined").hidden = false;
    } else if (consent === "later") {
      notice("The upgrade will be offered again later.");
    }
  } catch (error) {
    notice(error.message);
  }
}

async function health() {
  try {
    const reply = await fetch("/api/health", { cache: "no-store" });
    return reply.ok;
  } catch {
    return false;
  }
}

async function restart() {
  $("restart-button").disabled = true;
  say("restart-message", "Restarting…");
  try {
    await api("/api/admin/restart", { method: "POST" });
  } catch (error) {
    say("restart-message", `The restart failed: ${error.message}`);
    $("restart-button").disabled = false;
    return;
  }
  const started = Date.now();
  let wentDown = false;
  for (;;) {
    await sleep(POLL_MS);
    const up = await health();
    wentDown = wentDown || !up;
    // Back once it was seen down; a restart too quick to be seen is over after 15 s.
    if (up && (wentDown || Date.now() - started > 15000)) break;
    if (Date.now() - started > RESTART_TIMEOUT_MS) {
      say("restart-message", "The app did not come back: see the log in LLAMASHIP_HOME/logs.");
      return;
    }
  }
  $("restart").hidden = true;
  $("upgrade-job").hidden = true;
  notice("Restarted.");
  await refresh();
}

async function saveOffload(event) {
  event.preventDefault();
  const mode = document.querySelector('input[name="offload"]:checked');
  if (!mode) return;
  const change = { offload_mode: mode.value };
  const layers = $("offload-layers").value;
  if (mode.value === "mixed" || layers !== "") change.offload_layers = layers === "" ? null : Number(layers);
  try {
    const reply = await saveSettings(change);
    current.settings = reply.settings;
    say("offload-message", "Saved.");
    if (reply.restart_required) needRestart("The offload mode changed. Restart the app to use it.");
  } catch (error) {
    say("offload-message", error.message);
  }
}

async function pullModel(model) {
  if (!model) return;
  $("model-job").hidden = false;
  updateModelButtons();
  $("model-quick-button").disabled = true;
  say("model-message", `Asking the hub for ${model.name}'s sha256…`);
  try {
    const started = await api("/api/models/pull",
      { method: "POST", body: { name: model.name, use: true } });
    const job = await pollJob(`/api/models/pull/${started.job_id}`, "model-progress",
      (progress) => {
        if (progress.bytes_total > 0 && progress.bytes_done < progress.bytes_total) {
          const percent = Math.floor((100 * progress.bytes_done) / progress.bytes_total);
          say("model-message", `Downloading ${model.name}: ${megabytes(progress.bytes_done)} of ` +
            `${megabytes(progress.bytes_total)} (${percent} %)`);
        } else if (progress.bytes_total > 0) {
          say("model-message", `${model.name} is verified; loading it…`);
        }
      });
    // The job's own words: a pull of the same file already running (without "use") says so.
    say("model-message", job.state === "succeeded"
      ? `${job.message}.`
      : `The download failed: ${job.message}`);
  } catch (error) {
    say("model-message", `The download failed: ${error.message}`);
  }
  $("model-job").hidden = true;
  await refresh();
}

async function useModel() {
  const model = selectedModel();
  if (!model) return;
  try {
    say("model-message", `Loading ${model.name}…`);
    const reply = await api("/api/models/use", { method: "POST", body: { name: model.name } });
    say("model-message", `${reply.name} is in use.`);
    if (reply.restart_required) needRestart(`Restart the app to load ${reply.name}.`);
    await refresh();
  } catch (error) {
    say("model-message", error.message);
  }
}

async function benchmark() {
  $("bench-run").disabled = true;
  $("bench-result").hidden = true;
  say("bench-message", "Measuring (this takes a minute)…");
  try {
    const result = await api("/api/admin/benchmark", { method: "POST", body: {} });
    say("bench-tps", `${result.active.tokens_per_second.toFixed(1)} tokens/s`);
    say("bench-pp", `${result.active.prompt_tokens_per_second.toFixed(1)} tokens/s`);
    say("bench-speedup", `${result.generation_speedup.toFixed(1)}×` +
      (result.cpu_is_active ? " (this run used the CPU: nothing to compare)" : ""));
    $("bench-result").hidden = false;
    say("bench-message", result.summary);
    await refresh();
  } catch (error) {
    say("bench-message", `The benchmark failed: ${error.message}`);
  }
  $("bench-run").disabled = false;
}

async function start() {
  token = takeToken();
  if (!token) {
    notice("Changes need the app's admin token: open this page from the app, with the " +
      "address the server prints when it starts, or with `llamaship open`.");
  }
  $("consent-enable").addEventListener("click", upgrade);
  $("consent-later").addEventListener("click", () => answerLater("later"));
  $("consent-never").addEventListener("click", () => answerLater("never"));
  $("consent-reset").addEventListener("click", async () => {
    await answerLater("unset");
    await refresh();
  });
  $("restart-button").addEventListener("click", restart);
  $("offload-form").addEventListener("submit", saveOffload);
  $("model-select").addEventListener("change", updateModelButtons);
  $("model-pull").addEventListener("click", () => pullModel(selectedModel()));
  $("model-quick-button").addEventListener("click", quickStart);
  $("model-use").addEventListener("click", useModel);
  $("bench-run").addEventListener("click", benchmark);
  for (const id of ["consent-enable", "consent-later", "consent-never", "offload-save"]) {
    $(id).disabled = !token;
  }
  try {
    await refresh();
  } catch (error) {
    notice(`Cannot reach the app: ${error.message}`);
  }
}

document.addEventListener("DOMContentLoaded", start);
