// The web UI: streams tokens from POST /generate (server-sent events), or in
// task mode sends POST /send_text and polls /poll_task_status/{id}.
"use strict";

const $ = (id) => document.getElementById(id);
const output = $("output"), status = $("status"), stats = $("stats"), send = $("send");

async function loadModels() {
  const reply = await fetch("/v1/models");
  const body = await reply.json();
  for (const model of body.data) {
    $("model").add(new Option(model.id + (model.loaded ? "" : " (loads on first use)"), model.id));
  }
}

function request() {
  return {
    prompt: $("prompt").value,
    model_name: $("model").value || null,
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
  };
}

function showStats(result) {
  const t = result.timings || {}, u = result.usage || {};
  const parts = [
    `${u.completion_tokens} tokens`,
    t.tokens_per_second ? `${t.tokens_per_second.toFixed(1)} tokens/s` : null,
    t.time_to_first_token_ms != null ? `first token ${Math.round(t.time_to_first_token_ms)} ms` : null,
    `finish: ${result.finish_reason}`,
  ];
  const spec = result.speculative;
  if (spec && spec.drafted_tokens > 0) {
    parts.push(`acceptance ${(100 * spec.accepted_tokens / spec.drafted_tokens).toFixed(0)}%`);
  }
  stats.textContent = parts.filter(Boolean).join(" · ");
}

async function errorMessage(reply) {
  try { return (await reply.json()).error.message; } catch { return `HTTP ${reply.status}`; }
}

async function streamGenerate(body) {
  const reply = await fetch("/generate", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({...body, stream: true}),
  });
  if (!reply.ok) throw new Error(await errorMessage(reply));
  status.textContent = "generating…";
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {  // one SSE frame per blank line
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!frame.startsWith("data: ")) continue;
      const data = frame.slice(6);
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) throw new Error(event.error.message);
      output.textContent += event.text;
      if (event.finish_reason) showStats(event);
    }
  }
}

async function runTask(body) {
  const reply = await fetch("/send_text", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  if (!reply.ok) throw new Error(await errorMessage(reply));
  const {task_id} = await reply.json();
  for (;;) {
    const task = await (await fetch(`/poll_task_status/${task_id}`)).json();
    status.textContent = `task ${task_id.slice(0, 8)}: ${task.status}`;
    if (task.status === "done") { output.textContent = task.result.text; showStats(task.result); return; }
    if (task.status === "failed" || task.status === "cancelled") throw new Error(task.error || task.status);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  output.textContent = ""; stats.textContent = ""; status.className = "status";
  send.disabled = true;
  try {
    await ($("task-mode").checked ? runTask : streamGenerate)(request());
    status.textContent = "done";
  } catch (err) {
    status.textContent = err.message; status.className = "status error";
  } finally {
    send.disabled = false;
  }
});

loadModels().catch((err) => { status.textContent = `could not list models: ${err.message}`; });
