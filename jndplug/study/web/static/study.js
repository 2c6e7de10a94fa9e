// Participant page of the jndplug JND study. The server owns the protocol: this page only shows
// what /api/state says, and sends each answer as soon as it is given. Nothing is kept here that
// the server does not also have, so a reload, a closed tab or a restarted server resumes exactly.
"use strict";

const $ = (id) => document.getElementById(id);
const SCREENS = ["register", "instructions", "message", "trial", "done"];
const BETWEEN_TRIALS_MS = 300; // blank mid-grey between pairs, so one pair does not run into the next

let state = null;           // the last /api/state reply
let training = null;        // {pos, awaitingContinue} while practising; null otherwise
let answerable = false;     // keys and buttons count only while a pair is fully on screen
let shownAt = 0;            // performance.now() when the current pair appeared
let shownTrial = null;      // what is on screen: {kind: "trial"|"training", index}
let breakTakenAt = -1;      // trials_answered at the last break or welcome-back screen
let onContinue = null;      // what Space (or the continue button) does on a message screen
let flickerTimer = 0;

// ------------------------------------------------------------------ server

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

class ApiError extends Error {
  constructor(status, data) { super(data && data.error || `HTTP ${status}`); this.status = status; this.data = data; }
}

// Network failures and server errors are retried until the server answers (it may be
// restarting); a refusal (4xx) is returned to the caller at once.
async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    let resp;
    try {
      resp = await fetch(path, {
        method, credentials: "same-origin", cache: "no-store",
        headers: body === undefined ? {} : {"Content-Type": "application/json"},
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      resp = null;
    }
    if (resp && resp.status < 500) {
      $("banner").hidden = true;
      const data = await resp.json().catch(() => ({}));
      if (!resp.ok) throw new ApiError(resp.status, data);
      return data;
    }
    $("banner").hidden = false;
    await sleep(Math.min(4000, 500 * (attempt + 1)));
  }
}

async function loadImage(img, url) {
  for (let attempt = 0; ; attempt++) {
    img.src = url;
    try {
      await img.decode();
      $("banner").hidden = true;
      return;
    } catch (e) {
      // a refused image means the server has moved on (e.g. another tab answered): resync
      const probe = await fetch(url, {method: "HEAD", cache: "no-store"}).catch(() => null);
      if (probe && probe.status >= 400 && probe.status < 500) throw new ApiError(probe.status, {});
      $("banner").hidden = false;
      await sleep(Math.min(4000, 500 * (attempt + 1)));
    }
  }
}

// ------------------------------------------------------------------ screens

function show(name) {
  for (const s of SCREENS) $(s).hidden = s !== name;
  document.body.dataset.screen = name;
}

function message(title, text, then) {
  $("message-title").textContent = title;
  $("message-text").textContent = text;
  onContinue = then;
  show("message");
}

function render() {
  stopFlicker();
  setAnswerable(false);
  if (!state.registered) return showRegistration();
  if (state.stage === "instructions") {
    if (training === null) return showInstructions();
    return showTrainingTrial();
  }
  if (state.stage === "done") return show("done");
  const answered = state.progress.trials_answered;
  if (breakTakenAt < 0 && answered > 0) {  // page opened in the middle of the study
    breakTakenAt = answered;
    return message("Welcome back", "You continue where you left off.", render);
  }
  if (state.break_due && breakTakenAt !== answered) {
    breakTakenAt = answered;
    return message("Time for a break", "Rest your eyes for a minute or two. Continue when you are ready.", render);
  }
  breakTakenAt = Math.max(breakTakenAt, answered);
  showStudyTrial();
}

function showRegistration() {
  const sel = $("age-range");
  if (sel.options.length === 1) {
    for (const r of state.age_ranges) sel.add(new Option(r, r));
  }
  show("register");
  $("participant").focus();
}

function showInstructions() {
  $("instructions-layout").textContent = state.presentation === "flicker"
    ? "Each time, one image is shown in which the original and a test version alternate quickly. " +
      "If they differ, the image seems to flicker or shimmer somewhere."
    : "Each time, two images are shown side by side: on the left the original, on the right a test " +
      "version that may be slightly different somewhere, or not at all.";
  $("practice-note").hidden = state.training.length === 0;
  onContinue = () => {
    if (state.training.length === 0) return finishTraining();
    training = {pos: 0};
    render();
  };
  show("instructions");
}

function questionText() {
  return state.presentation === "flicker" ? "Do you see the image change?"
                                          : "Do you see any difference between the two images?";
}

// ------------------------------------------------------------------ pairs

async function showPair(refUrl, testUrl, what) {
  show("trial");
  const stimuli = $("stimuli");
  stimuli.classList.add("loading");
  stimuli.classList.toggle("flicker", state.presentation === "flicker");
  $("caption-test").textContent = state.presentation === "flicker" ? "" : "test";
  $("question").textContent = questionText();
  $("trial").dataset.trialIndex = what.kind === "trial" ? String(what.index) : "";
  $("trial").dataset.kind = what.kind;
  shownTrial = what;
  const refImg = state.presentation === "flicker" ? $("img-flicker-ref") : $("img-ref");
  await sleep(BETWEEN_TRIALS_MS);
  await Promise.all([loadImage(refImg, refUrl), loadImage($("img-test"), testUrl)]);
  if (shownTrial !== what) return false;  // something else was shown meanwhile
  for (const img of [$("img-ref"), $("img-test"), $("img-flicker-ref")]) nativeSize(img);
  fitPanes();
  stimuli.classList.remove("loading");
  if (state.presentation === "flicker") startFlicker();
  await new Promise(requestAnimationFrame);  // time from when the pair is painted
  shownAt = performance.now();
  setAnswerable(true);
  return true;
}

// One image pixel per screen (device) pixel, whatever the browser's zoom or the screen's scaling.
function nativeSize(img) {
  if (!img.naturalWidth) return;
  const dpr = window.devicePixelRatio || 1;
  img.style.width = `${img.naturalWidth / dpr}px`;
  img.style.height = `${img.naturalHeight / dpr}px`;
}

// Panes share the window; an image larger than its pane scrolls instead of shrinking.
function fitPanes() {
  const flicker = state.presentation === "flicker";
  const width = flicker ? window.innerWidth - 40 : (window.innerWidth - 40 - 24) / 2;
  const height = window.innerHeight - $("status").offsetHeight - 150;
  for (const pane of [$("pane-ref"), $("pane-test")]) {
    pane.style.maxWidth = `${Math.max(64, width)}px`;
    pane.style.maxHeight = `${Math.max(64, height)}px`;
    pane.scrollLeft = pane.scrollTop = 0;
  }
}

let syncing = false;
for (const [a, b] of [["pane-ref", "pane-test"], ["pane-test", "pane-ref"]]) {
  $(a).addEventListener("scroll", () => {
    if (syncing) return;
    syncing = true;
    $(b).scrollLeft = $(a).scrollLeft;
    $(b).scrollTop = $(a).scrollTop;
    requestAnimationFrame(() => { syncing = false; });
  });
}

function startFlicker() {
  const ref = $("img-flicker-ref");
  let last = performance.now();
  let on = false;
  const tick = (now) => {
    if (now - last >= state.flicker_ms - 4) {  // 4 ms: land on the frame nearest the period
      on = !on;
      ref.classList.toggle("shown", on);
      last = now;
    }
    flickerTimer = requestAnimationFrame(tick);
  };
  flickerTimer = requestAnimationFrame(tick);
}

function stopFlicker() {
  cancelAnimationFrame(flickerTimer);
  $("img-flicker-ref").classList.remove("shown");
}

function setAnswerable(on) {
  answerable = on;
  $("answer-same").disabled = $("answer-diff").disabled = !on;
  $("trial").dataset.answerable = on ? "1" : "0";
}

function setProgress(text, fraction) {
  $("progress-text").textContent = text;
  $("progress").value = fraction;
}

// ------------------------------------------------------------------ training

function showTrainingTrial() {
  const n = state.training.length;
  if (training.pos >= n) {
    return message("Practice finished",
      "The study starts now. From here on there is no feedback: answer what you see.", finishTraining);
  }
  $("feedback").textContent = "";
  setProgress(`Practice ${training.pos + 1} of ${n}`, training.pos / n);
  const i = state.training[training.pos].index;
  showPair(`/api/training/${i}/reference`, `/api/training/${i}/test`, {kind: "training", index: i})
    .catch(resync);
}

function answerTraining(noticeable) {
  setAnswerable(false);
  stopFlicker();
  const correct = state.training[training.pos].noticeable;
  $("feedback").textContent = noticeable === correct
    ? "Right." + (correct ? " These two images differ." : " These two images are identical.")
    : (correct ? "These two images do differ: look again before continuing."
               : "These two images are identical.");
  training.pos += 1;
  setTimeout(render, noticeable === correct ? 900 : 2500);
}

async function finishTraining() {
  try {
    state = await api("POST", "/api/training-done");
    training = null;
    render();
  } catch (e) { resync(e); }
}

// ------------------------------------------------------------------ the study

function showStudyTrial() {
  $("feedback").textContent = "";
  const p = state.progress;
  setProgress(`Image ${Math.min(p.images_done + 1, p.images_total)} of ${p.images_total}`,
              p.images_done / p.images_total);
  const i = state.trial.index;
  showPair(`/api/trial/${i}/reference`, `/api/trial/${i}/test`, {kind: "trial", index: i}).catch(resync);
}

async function answerStudy(noticeable) {
  const rt = Math.round(performance.now() - shownAt);
  setAnswerable(false);
  stopFlicker();
  $("stimuli").classList.add("loading");
  try {
    state = await api("POST", "/api/answer",
                      {trial_index: shownTrial.index, noticeable, response_time_ms: rt});
  } catch (e) {
    // 409: the server did not expect this answer (e.g. a retried answer it had already stored);
    // it sends its state along, and the page continues from there.
    if (e instanceof ApiError && e.status === 409 && e.data.state) state = e.data.state;
    else return resync(e);
  }
  render();
}

function answer(noticeable) {
  if (!answerable || !shownTrial) return;
  if (shownTrial.kind === "training") answerTraining(noticeable);
  else answerStudy(noticeable);
}

async function resync(err) {
  if (err) console.warn(err);
  state = await api("GET", "/api/state");
  render();
}

// ------------------------------------------------------------------ events

$("register-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const vision = form.get("vision");
  $("register-error").textContent = "";
  if (!form.get("participant")) return void ($("register-error").textContent = "Please enter your participant id.");
  if (!vision) return void ($("register-error").textContent = "Please say whether your eyesight is normal or corrected.");
  try {
    state = await api("POST", "/api/register", {
      participant: form.get("participant").trim(), age_range: form.get("age_range") || null, vision,
      display: {dpr: window.devicePixelRatio || 1, screen_w: screen.width, screen_h: screen.height,
                window_w: window.innerWidth, window_h: window.innerHeight},
    });
  } catch (e) {
    $("register-error").textContent = e.message;
    return;
  }
  breakTakenAt = 0;
  render();
});

$("answer-same").addEventListener("click", () => answer(false));
$("answer-diff").addEventListener("click", () => answer(true));
// One-shot: Space on a focused continue button would otherwise continue twice (keydown and click).
function continueNow() {
  const f = onContinue;
  onContinue = null;
  if (f) f();
}

$("instructions-go").addEventListener("click", continueNow);
$("message-go").addEventListener("click", continueNow);
$("leave").addEventListener("click", async () => {
  state = await api("POST", "/api/leave");
  training = null;
  breakTakenAt = -1;
  $("register-form").reset();
  render();
});

document.addEventListener("keydown", (ev) => {
  if (ev.repeat || ev.ctrlKey || ev.altKey || ev.metaKey) return;
  const screen = document.body.dataset.screen;
  if (ev.key === " " && (screen === "instructions" || screen === "message")) {
    ev.preventDefault();
    continueNow();
  } else if (screen === "trial" && (ev.key === "s" || ev.key === "S")) {
    answer(false);
  } else if (screen === "trial" && (ev.key === "d" || ev.key === "D")) {
    answer(true);
  }
});

window.addEventListener("resize", () => { if (document.body.dataset.screen === "trial") fitPanes(); });

resync();
