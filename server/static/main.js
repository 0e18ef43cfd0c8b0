// The web UI: a chat. Each turn sends the whole conversation to
// POST /v1/chat/completions and streams the answer (server-sent events), so a
// server with a prefix cache re-reads only what is new. Stop aborts the fetch:
// the server sees the connection close and frees the sequence. Task mode sends
// one message to POST /send_text and polls /poll_task_status/{id} instead.
// Model output only ever reaches the page as text (textContent, Text nodes).
"use strict";

const $ = (id) => document.getElementById(id);
const messages = $("messages"), prompt = $("prompt"), send = $("send"), stop = $("stop");
const status = $("status");

// What the next turn sends: {role, content} in order. A turn that failed is
// left out (its bubbles stay, struck through); a stopped answer stays in as far
// as it got, as llama-server's UI does.
let history = [];
let inFlight = null;  // {controller: AbortController, cancelTask: null | () => void, label}

async function loadModels() {
  const reply = await fetch("/v1/models");
  if (!reply.ok) throw new Error(await errorMessage(reply));
  for (const model of (await reply.json()).data) {
    $("model").add(new Option(model.id + (model.loaded ? "" : " (loads on first use)"), model.id));
  }
}

function settings() {
  return {
    model: $("model").value || undefined,
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
  };
}

async function errorMessage(reply) {
  try {
    const body = await reply.json();
    return body.error.message || `HTTP ${reply.status}`;
  } catch {
    return `HTTP ${reply.status}`;
  }
}

function setStatus(text, isError = false) {
  status.textContent = text;
  status.className = isError ? "status error" : "status";
}

function isNearBottom() {
  return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 48;
}

// Runs a change to the conversation; follows it down if the reader was at the end.
function keepingBottom(change) {
  const stick = isNearBottom();
  change();
  if (stick) messages.scrollTop = messages.scrollHeight;
}

function element(tag, className, text = "") {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

function addMessage(role, label, text) {
  const item = element("li", `msg ${role}`);
  const body = element("div", "text", text);
  item.append(element("div", "role", label), body);
  messages.append(item);
  messages.scrollTop = messages.scrollHeight;
  return item;
}

// One assistant bubble: text as it streams, then a line of figures.
class Answer {
  constructor(label) {
    this.item = addMessage("assistant", label, "");
    this.textNode = document.createTextNode("");
    this.item.querySelector(".text").append(this.textNode);
    this.stats = element("div", "stats");
    this.item.append(this.stats);
  }

  get text() { return this.textNode.data; }

  append(piece) { keepingBottom(() => this.textNode.appendData(piece)); }

  replace(text) { keepingBottom(() => { this.textNode.data = text; }); }

  note(text) { keepingBottom(() => { this.stats.textContent = text; }); }

  // figures: {tokens, tokensPerSecond, ttftMs, promptTokens, cachedTokens, finish, extra}
  finish(figures) { keepingBottom(() => this.showFigures(figures)); }

  showFigures(figures) {
    const number = (value, digits = 0) => (value == null ? "–" : value.toFixed(digits));
    const parts = [
      ["tokens", figures.tokens, `${number(figures.tokens)} tokens`,
        "tokens generated"],
      ["speed", figures.tokensPerSecond, `${number(figures.tokensPerSecond, 1)} tok/s`,
        "tokens after the first, over the time since the first"],
      ["ttft", figures.ttftMs, `TTFT ${number(figures.ttftMs)} ms`,
        "time to first token: from sending to the first text"],
      ["cached", figures.cachedTokens,
        `${number(figures.cachedTokens)} of ${number(figures.promptTokens)} prompt tokens cached`,
        "prompt tokens whose KV came from the server's prefix cache"],
    ];
    this.stats.replaceChildren();
    for (const [name, value, text, title] of parts) {
      if (this.stats.childNodes.length) this.stats.append(" · ");
      const span = element("span", name, text);
      span.dataset.stat = name;
      if (value != null) span.dataset.value = String(value);
      if (name === "cached" && figures.promptTokens != null) {
        span.dataset.promptTokens = String(figures.promptTokens);
      }
      span.title = title;
      this.stats.append(span);
    }
    if (figures.finish && figures.finish !== "stop") {
      this.stats.append(" · ", element("span", figures.finish, figures.finish));
    }
    for (const extra of figures.extra || []) this.stats.append(" · ", extra);
  }

  stopped(note) {
    keepingBottom(() => this.stats.replaceChildren(element("span", "stopped", "stopped"), note));
  }

  fail(message) {
    this.item.classList.add("failed");
    if (!this.text) this.replace(message);
    else keepingBottom(() => this.stats.replaceChildren(element("span", "error", message)));
  }
}

// The data of each server-sent event, until [DONE] or the end of the body.
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", isDone = false;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while (!isDone && (end = buffer.indexOf("\n\n")) >= 0) {  // frames end with a blank line
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5)).join("\n");
      if (data === "[DONE]") isDone = true;  // read on to the end so the request completes
      else if (data) yield data;
    }
  }
}

// Times are taken in the browser: TTFT from sending to the first text,
// tokens/s over the tokens after the first and the time since the first.
function streamFigures(m) {
  const tokens = m.usage?.completion_tokens ?? m.pieces;
  const seconds = m.first != null ? (m.last - m.first) / 1000 : 0;
  return {
    tokens,
    tokensPerSecond: tokens > 1 && seconds > 0 ? (tokens - 1) / seconds : null,
    ttftMs: m.first != null ? m.first - m.sent : null,
    promptTokens: m.usage?.prompt_tokens ?? null,
    cachedTokens: m.usage?.prompt_tokens_details?.cached_tokens ?? null,
    finish: m.finish,
  };
}

async function streamChat(conversation, answer, m, signal) {
  const body = {
    ...settings(), messages: conversation, stream: true, stream_options: {include_usage: true},
  };
  m.sent = performance.now();
  const reply = await fetch("/v1/chat/completions", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body), signal,
  });
  if (!reply.ok) throw new Error(await errorMessage(reply));
  answer.note("waiting for the first token…");
  for await (const data of sseData(reply.body)) {
    const event = JSON.parse(data);
    if (event.error) throw new Error(event.error.message);
    if (event.usage) m.usage = event.usage;
    const choice = event.choices?.[0];
    if (!choice) continue;
    const piece = choice.delta?.content;
    if (piece) {
      m.last = performance.now();
      if (m.first == null) { m.first = m.last; answer.note("generating…"); }
      m.pieces += 1;
      answer.append(piece);
    }
    if (choice.finish_reason) m.finish = choice.finish_reason;
  }
  answer.finish(streamFigures(m));
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, {once: true});
  });
}

// The task API takes one prompt, so a task turn is answered without the
// conversation; its answer joins the history for the chat turns after it.
async function runTask(text, answer, turn) {
  const {model, ...rest} = settings();
  const reply = await fetch("/send_text", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({prompt: text, model_name: model ?? null, ...rest}),
    signal: turn.controller.signal,
  });
  if (!reply.ok) throw new Error(await errorMessage(reply));
  const {task_id: id} = await reply.json();
  turn.cancelTask = () => fetch(`/cancel_task/${id}`, {method: "POST"}).catch(() => {});
  const label = turn.label = `task ${id.slice(0, 8)}`;
  for (;;) {
    const poll = await fetch(`/poll_task_status/${id}`, {signal: turn.controller.signal});
    if (!poll.ok) throw new Error(await errorMessage(poll));
    const task = await poll.json();
    answer.note(`${label}: ${task.status}`);
    if (task.status === "done") {
      const result = task.result, t = result.timings || {}, u = result.usage || {};
      answer.replace(result.text);
      answer.finish({
        tokens: u.completion_tokens, tokensPerSecond: t.tokens_per_second ?? null,
        ttftMs: t.time_to_first_token_ms ?? null, promptTokens: u.prompt_tokens ?? null,
        cachedTokens: u.prompt_tokens_details?.cached_tokens ?? null,
        finish: result.finish_reason,
        extra: [`${label}, sent alone, server timings`],
      });
      return;
    }
    if (task.status === "failed" || task.status === "cancelled") {
      throw new Error(typeof task.error === "string" ? task.error : task.status);
    }
    await sleep(300, turn.controller.signal);
  }
}

function setBusy(isBusy) {
  send.disabled = isBusy;
  stop.disabled = !isBusy;
}

async function sendMessage() {
  const text = prompt.value;
  if (inFlight || !text.trim()) return;
  prompt.value = "";
  fitPrompt();
  const isTask = $("task-mode").checked;
  const conversation = history;  // New chat swaps in a new array: a late answer lands in the old one
  const say = (line, isError = false) => { if (conversation === history) setStatus(line, isError); };
  const question = {role: "user", content: text};
  conversation.push(question);
  const asked = addMessage("user", isTask ? "You (task)" : "You", text);
  const answer = new Answer($("model").value || "assistant");
  const turn = {controller: new AbortController(), cancelTask: null, label: null};
  const m = {sent: performance.now(), first: null, last: null, pieces: 0, usage: null, finish: null};
  inFlight = turn;
  setBusy(true);
  say("generating…");
  try {
    if (isTask) await runTask(text, answer, turn);
    else await streamChat([...conversation], answer, m, turn.controller.signal);
    conversation.push({role: "assistant", content: answer.text});
    say("done");
  } catch (err) {
    if (turn.controller.signal.aborted) {
      conversation.push({role: "assistant", content: answer.text});
      if (isTask) answer.stopped(` · ${turn.label ?? "task"} cancelled`);
      else answer.finish({...streamFigures(m), finish: "stopped"});
      say("stopped");
    } else {
      conversation.splice(conversation.indexOf(question), 1);
      asked.classList.add("excluded");
      asked.title = "left out of the conversation: its answer failed";
      answer.fail(err.message);
      say("that turn failed, so the next one leaves it out", true);
    }
  } finally {
    if (inFlight === turn) {
      inFlight = null;
      setBusy(false);
    }
  }
}

function stopTurn() {
  if (!inFlight) return;
  inFlight.controller.abort();
  if (inFlight.cancelTask) inFlight.cancelTask();
}

function newChat() {
  stopTurn();
  inFlight = null;  // the stopped turn settles into the old history, off the page
  setBusy(false);
  history = [];
  messages.replaceChildren();
  setStatus("");
  prompt.focus();
}

function fitPrompt() {
  prompt.style.height = "auto";
  prompt.style.height = `${prompt.scrollHeight + 2}px`;
}

$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sendMessage();
});
prompt.addEventListener("keydown", (e) => {
  // Enter sends, Shift+Enter is a new line; Enter that confirms an IME composition is neither
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    if (!send.disabled) $("chat-form").requestSubmit();
  }
});
prompt.addEventListener("input", fitPrompt);
stop.addEventListener("click", stopTurn);
$("new-chat").addEventListener("click", newChat);

loadModels().catch((err) => setStatus(`could not list models: ${err.message}`, true));
