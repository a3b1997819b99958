// The page's per-start token: the playground refuses /api/* without it.
const TOKEN = document.querySelector('meta[name="playground-token"]').content;
const API_HEADERS = { "Content-Type": "application/json", "X-Playground-Token": TOKEN };
// The playground page: renders the emulated workspace and follows it live (Server-Sent Events).
"use strict";

const state = { users: {}, channels: [], messages: new Map(), ephemerals: [], timeline: [], panes: new Map(), bot: "", channel: "C0GENERAL", thread: null };
const botName = () => (state.users[state.bot] || {}).name || "agentbot";  // one name: the bot user's
const $ = (id) => document.getElementById(id);

function esc(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

// Standard Markdown, as Slack's markdown block shows it (the subset agents write).
function markdown(source) {
  const out = [];
  const lines = String(source).split("\n");
  let i = 0, list = null, para = [];
  const flush = () => { if (para.length) { out.push("<p>" + inline(para.join("\n")).replace(/\n/g, "<br>") + "</p>"); para = []; } };
  const endList = () => { if (list) { out.push(`</${list}>`); list = null; } };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s{0,3}(```+|~~~+)(.*)$/);
    if (fence) {
      flush(); endList();
      const code = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) { code.push(lines[i]); i++; }
      out.push("<pre><code>" + esc(code.join("\n")) + "</code></pre>");
      i++;
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    const bullet = line.match(/^\s*[-*]\s+(.*)$/);
    const numbered = line.match(/^\s*\d+[.)]\s+(.*)$/);
    if (heading) { flush(); endList(); out.push(`<h3>${inline(heading[2])}</h3>`); }
    else if (bullet || numbered) {
      flush();
      const kind = bullet ? "ul" : "ol";
      if (list !== kind) { endList(); out.push(`<${kind}>`); list = kind; }
      out.push(`<li>${inline((bullet || numbered)[1])}</li>`);
    } else if (!line.trim()) { flush(); endList(); }
    else { endList(); para.push(line); }
    i++;
  }
  flush(); endList();
  return out.join("");
}

function inline(text) {
  const codes = [];
  let html = esc(text).replace(/`([^`]+)`/g, (_, c) => { codes.push(c); return `\u0000${codes.length - 1}\u0000`; });
  html = html.replace(/\[([^\]]+)\]\((https?:[^)\s]+)\)/g, '<a href="$2" target="_blank" rel="noopener">$1</a>')
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[\s(])[*_]([^*_\n]+)[*_](?=[\s).,!?:;]|$)/g, "$1<em>$2</em>");
  return html.replace(/\u0000(\d+)\u0000/g, (_, n) => `<code>${codes[Number(n)]}</code>`);
}

// Slack's own text format, for what people type (<@U1>, <url|label>, *bold*).
function mrkdwn(text) {
  let html = esc(text);
  html = html.replace(/&lt;@(\w+)(?:\|[^&]*)?&gt;/g, (_, id) => `<strong>@${esc((state.users[id] || {}).name || id)}</strong>`)
    .replace(/&lt;(https?:[^|&]+)\|([^&]+)&gt;/g, '<a href="$1" target="_blank" rel="noopener">$2</a>')
    .replace(/&lt;(https?:[^&]+)&gt;/g, '<a href="$1" target="_blank" rel="noopener">$1</a>')
    .replace(/\*([^*\n]+)\*/g, "<strong>$1</strong>").replace(/```([\s\S]*?)```/g, "<pre><code>$1</code></pre>");
  return html.replace(/\n/g, "<br>");
}

function renderBlocks(message) {
  if (!message.blocks) return `<div class="content">${mrkdwn(message.text)}</div>`;
  return message.blocks.map((block) => {
    if (block.type === "markdown") return `<div class="content">${markdown(block.text)}</div>`;
    if (block.type === "section") return `<div class="content">${mrkdwn((block.text || {}).text || "")}</div>`;
    if (block.type === "context") return `<div class="context">${(block.elements || []).map((e) => mrkdwn(e.text || "")).join(" ")}</div>`;
    if (block.type === "context_actions") {  // Slack's feedback buttons under an answer
      return '<div class="actions feedback">' + block.elements.filter((e) => e.type === "feedback_buttons").map((e) =>
        [e.positive_button, e.negative_button].map((b) =>
          `<button data-action="${esc(e.action_id)}" data-value="${esc(b.value)}" data-ts="${esc(message.ts)}" data-channel="${esc(message.channel)}" title="${esc(b.accessibility_label || "")}">${esc(b.text.text)}</button>`
        ).join("")).join("") + "</div>";
    }
    if (block.type === "actions") {
      return '<div class="actions">' + block.elements.map((e) =>
        `<button class="${e.style || ""}" data-action="${esc(e.action_id)}" data-value="${esc(e.value || "")}" data-ts="${esc(message.ts)}" data-channel="${esc(message.channel)}">${esc(e.text.text)}</button>`
      ).join("") + "</div>";
    }
    return "";
  }).join("");
}

// A native stream's task cards (tool runs), as Slack shows them above the streamed text.
const TASK_ICONS = { pending: "○", in_progress: "◐", complete: "✓", error: "✕" };
function renderTasks(message) {
  if (!message.tasks || !message.tasks.length) return "";
  return '<div class="tasks">' + message.tasks.map((t) =>
    `<div class="task ${esc(t.status)}"><span class="icon">${TASK_ICONS[t.status] || "•"}</span> ${esc(t.title)}</div>`
  ).join("") + "</div>";
}

function fileSize(bytes) {
  return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MB" : Math.max(1, Math.round(bytes / 1024)) + " KB";
}

// Files on a message: pictures shown, anything else a download (served by the playground).
function renderFiles(message) {
  if (!message.files || !message.files.length) return "";
  return '<div class="files">' + message.files.map((f) => {
    const url = `/api/files/${encodeURIComponent(f.id)}?token=${encodeURIComponent(TOKEN)}`;
    const label = `${esc(f.name)} <span class="size">${esc(fileSize(f.size || 0))}</span>`;
    if (["png", "jpg", "jpeg", "gif", "webp"].includes(String(f.filetype).toLowerCase())) {
      return `<figure class="file image"><a href="${url}" target="_blank" rel="noopener"><img src="${url}" alt="${esc(f.name)}"></a><figcaption>${label}</figcaption></figure>`;
    }
    return `<a class="file" href="${url}" download="${esc(f.name)}"><span class="kind">${esc(String(f.filetype || "file").toUpperCase())}</span> ${label}</a>`;
  }).join("") + "</div>";
}

function renderMessage(message, inThread) {
  const user = state.users[message.user] || { name: message.user };
  const replies = inThread ? 0 : [...state.messages.values()].filter((m) => m.thread_ts === message.ts && m.ts !== message.ts && !m.deleted).length;
  const name = message.bot ? botName() : user.name;
  return `<div class="message" data-ts="${esc(message.ts)}">
    <div class="avatar ${message.bot ? "bot" : ""}">${esc(name[0].toUpperCase())}</div>
    <div class="body"><div class="who">${esc(name)}${message.bot ? '<span class="tag">APP</span>' : ""}</div>
    ${renderTasks(message)}
    ${message.text || message.blocks ? renderBlocks(message) : ""}
    ${message.streaming ? '<div class="streaming" title="streaming (chat.appendStream)">● streaming</div>' : ""}
    ${renderFiles(message)}
    ${replies ? `<div class="replies" data-thread="${esc(message.ts)}">${replies} ${replies === 1 ? "reply" : "replies"}</div>` : ""}</div></div>`;
}

function render() {
  const channel = state.channels.find((c) => c.id === state.channel) || {};
  $("channel-title").textContent = channel.is_im ? `${botName()} (direct message)` : "#" + channel.name;
  const inChannel = [...state.messages.values()].filter((m) => m.channel === state.channel && !m.deleted && (!m.thread_ts || m.thread_ts === m.ts));
  const pane = $("messages");
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
  pane.innerHTML = inChannel.map((m) => renderMessage(m, false)).join("") + renderEphemerals(null);
  if (atBottom) pane.scrollTop = pane.scrollHeight;
  for (const li of document.querySelectorAll("#sidebar li")) li.classList.toggle("active", li.dataset.id === state.channel);
  if (state.thread) {
    $("thread").classList.remove("hidden");
    const threadMessages = [...state.messages.values()].filter((m) => m.channel === state.channel && !m.deleted && (m.ts === state.thread || m.thread_ts === state.thread));
    const tpane = $("thread-messages");
    tpane.innerHTML = threadMessages.map((m) => renderMessage(m, true)).join("") + renderEphemerals(state.thread);
    tpane.scrollTop = tpane.scrollHeight;
    renderPane(state.panes.get(state.channel + "/" + state.thread));
  } else {
    $("thread").classList.add("hidden");
  }
  renderTimeline();
}

// Slack's assistant pane: the thread's title, its suggested prompts, and the bot's status
// ("is thinking…") until its reply appears.
function renderPane(pane) {
  $("thread-title").textContent = pane ? (pane.title || "New chat") + " · assistant" : "Thread";
  $("pane-bar").classList.toggle("hidden", !pane || !pane.prompts.length);
  $("pane-prompts").innerHTML = pane && pane.prompts.length
    ? `<div class="prompts-title">${esc(pane.prompts_title || "Suggested prompts")}</div>` +
      pane.prompts.map((p) => `<button class="prompt" data-prompt="${esc(p.message)}">${esc(p.title)}</button>`).join("")
    : "";
  const status = pane && pane.status ? `${botName()} ${pane.status}` + (pane.loading.length ? ` <span class="loading">${esc(pane.loading[0])}</span>` : "") : "";
  $("pane-status").innerHTML = status;
  $("pane-status").classList.toggle("hidden", !status);
}

// What the bot told one person privately (a refused Stop or Approve, a note, the Stop of a
// streamed reply): shown only while writing as that person, as Slack shows it only to them.
function renderEphemerals(thread) {
  const me = $("as-user").value;
  return state.ephemerals.filter((e) => !e.deleted && e.user === me && e.channel === state.channel && (thread ? e.thread_ts === thread : !e.thread_ts))
    .map((e) => `<div class="message ephemeral"><div class="avatar bot">${esc(botName()[0].toUpperCase())}</div>
      <div class="body"><div class="who">${esc(botName())}<span class="tag">APP</span> <span class="only-you">Only visible to you</span></div>
      ${renderBlocks(e)}</div></div>`).join("");
}

// Runs of the same event fold into one line ("thread.message.delta ×24"), so each Slack call
// and each tool run stands out.
function foldTimeline(items) {
  const folded = [];
  for (const e of items) {
    const key = e.kind === "agent" ? "agent " + e.event : "slack " + e.method + (e.ok ? "" : " " + (e.status === 429 ? "429" : e.error || "error"));
    const last = folded[folded.length - 1];
    if (last && last.key === key) { last.count += 1; last.until = e.t; } else folded.push({ key, e, count: 1, until: e.t });
  }
  return folded;
}

function renderTimeline() {
  const items = state.timeline.filter((e) => {
    if (!state.thread) return false;
    if (e.kind === "agent") return (e.slack || "").endsWith("/" + state.channel + "/" + state.thread);
    const replyTs = [...state.messages.values()].filter((m) => m.thread_ts === state.thread).map((m) => m.ts);
    return e.channel === state.channel && (e.thread_ts === state.thread || replyTs.includes(e.ts));
  });
  const list = $("timeline-list");
  const follow = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.innerHTML = foldTimeline(items).slice(-400).map(({ e, count, until }) => {
    const times = count > 1 ? ` ×${count} <span class="span">(${until - e.t} ms)</span>` : "";
    if (e.kind === "agent") {
      const tool = e.event === "thread.run.requires_action" || e.event === "response.function_call_arguments.done" ? " tool" : "";
      return `<li class="agent${tool}">${e.t} agent ${esc(e.event)}${times}</li>`;
    }
    const failed = e.status === 429 ? " 429 (rate limited)" : e.ok ? "" : ` ${esc(e.error || "error")}`;
    return `<li class="slack ${e.ok ? "" : "error"}">${e.t} slack ${esc(e.method)}${failed}${times}</li>`;
  }).join("") || '<li>Open a thread to see its timeline.</li>';
  if (follow) list.scrollTop = list.scrollHeight;
}

function apply(change) {
  if (change.kind === "ephemeral") {  // new, or changed through a click's response_url
    const at = state.ephemerals.findIndex((e) => e.channel === change.channel && e.ts === change.ts);
    if (at < 0) state.ephemerals.push(change); else state.ephemerals[at] = change;
  } else if (change.kind === "pane") {
    state.panes.set(change.channel + "/" + change.thread_ts, change);
  } else if (change.kind === "message") {
    state.messages.set(change.channel + "/" + change.ts, change);
    if (change.bot && change.thread_ts && change.channel === state.channel && !state.thread) state.thread = change.thread_ts;
  } else {
    state.timeline.push(change);
  }
}

function load(snapshot) {
  state.users = snapshot.users; state.channels = snapshot.channels; state.bot = snapshot.bot_user;
  state.messages = new Map(snapshot.messages.map((m) => [m.channel + "/" + m.ts, m]));
  state.timeline = snapshot.timeline;
  state.ephemerals = snapshot.ephemerals || [];
  state.panes = new Map((snapshot.panes || []).map((p) => [p.channel + "/" + p.thread_ts, p]));
  $("writer").value = snapshot.stream_mode || "edit";
  $("mode").textContent = snapshot.real_agent ? "emulated Slack, your real agent" : "a demo on emulated services (Slack and a scripted agent)";
  const people = Object.entries(state.users).filter(([, u]) => !u.is_bot);
  $("as-user").innerHTML = people.map(([id, u]) => `<option value="${esc(id)}">${esc(u.name)}</option>`).join("");
  $("channel-list").innerHTML = state.channels.filter((c) => !c.is_im).map((c) => `<li data-id="${esc(c.id)}">#${esc(c.name)}</li>`).join("");
  $("dm-list").innerHTML = state.channels.filter((c) => c.is_im).map((c) => `<li data-id="${esc(c.id)}">${esc(botName())}</li>`).join("");
  for (const box of ["text", "thread-text"]) $(box).placeholder = box === "text" ? `Message (mention the bot with @${botName()})` : "Reply…";
  render();
}

function slackText(text) {
  // What the Slack client sends: entities escaped, @names as user mentions.
  let out = text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  out = out.replace(new RegExp("@(" + botName() + "|agent)\\b", "g"), `<@${state.bot}>`);  // @agent: the old name
  for (const [id, user] of Object.entries(state.users)) out = out.replace(new RegExp("@" + user.name + "\\b", "g"), `<@${id}>`);
  return out;
}

async function base64Of(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

// Post as the chosen person, with the files picked in `picker` (if any); say what went wrong.
async function send(text, threadTs, picker, status, asTyped = true) {
  const chosen = picker ? [...picker.files] : [];
  if (!text.trim() && !chosen.length) return true;
  status.textContent = chosen.length ? "Uploading…" : "";
  const files = await Promise.all(chosen.map(async (f) => ({ name: f.name, type: f.type, data: await base64Of(f) })));
  let answer;
  try {
    const response = await fetch("/api/post", { method: "POST", headers: API_HEADERS,
      body: JSON.stringify({ user: $("as-user").value, channel: state.channel, text: asTyped ? slackText(text) : text, thread_ts: threadTs || null, files }) });
    answer = response.status === 413 ? { ok: false, error: "the files are too large for the playground" } : await response.json();
  } catch (err) {
    answer = { ok: false, error: "the playground did not answer (is it still running?)" };
  }
  status.textContent = answer.ok ? "" : "Not sent: " + answer.error;
  if (answer.ok && picker) picker.value = "";
  return answer.ok;
}

function showPicked(picker, status) {
  const names = [...picker.files].map((f) => f.name);
  status.textContent = names.length ? "Attached: " + names.join(", ") : "";
}

document.addEventListener("click", async (event) => {
  const target = event.target;
  if (target.dataset.attach) {
    $(target.dataset.attach).click();
  } else if (target.dataset.action) {
    await fetch("/api/click", { method: "POST", headers: API_HEADERS,
      body: JSON.stringify({ user: $("as-user").value, channel: target.dataset.channel, ts: target.dataset.ts,
        action_id: target.dataset.action, value: target.dataset.value }) });
  } else if (target.dataset.prompt) {  // a suggested prompt: sent as the person's message in the pane
    await send(target.dataset.prompt, state.thread, null, $("thread-attached"), false);  // Slack's own text, as the prompt holds it
  } else if (target.id === "open-pane") {
    const here = state.channels.find((c) => c.id === state.channel) || {};
    const answer = await (await fetch("/api/assistant", { method: "POST", headers: API_HEADERS,
      body: JSON.stringify({ user: $("as-user").value, viewing: here.is_im ? null : state.channel }) })).json();
    if (answer.ok) { state.channel = answer.channel; state.thread = answer.thread_ts; render(); }
    else $("thread-attached").textContent = "Could not open the pane: " + answer.error;
  } else if (target.dataset.thread) {
    state.thread = target.dataset.thread; render();
  } else if (target.closest("#sidebar li")) {
    state.channel = target.closest("#sidebar li").dataset.id; state.thread = null; render();
  }
});
$("close-thread").addEventListener("click", () => { state.thread = null; render(); });
$("writer").addEventListener("change", async () => {
  await fetch("/api/writer", { method: "POST", headers: API_HEADERS, body: JSON.stringify({ mode: $("writer").value }) });
});
$("as-user").addEventListener("change", render);  // what one person sees privately follows them
for (const [form, box, picker, status, thread] of [["composer", "text", "attach", "attached", false], ["thread-composer", "thread-text", "thread-attach", "thread-attached", true]]) {
  $(form).addEventListener("submit", async (e) => {
    e.preventDefault();
    if (await send($(box).value, thread ? state.thread : null, $(picker), $(status))) $(box).value = "";
  });
  $(picker).addEventListener("change", () => showPicked($(picker), $(status)));
}
for (const [box, form] of [["text", "composer"], ["thread-text", "thread-composer"]]) {
  $(box).addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $(form).requestSubmit(); } });
}

let pending = false;
function schedule() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); } }
const stream = new EventSource("/api/stream?token=" + encodeURIComponent(TOKEN));
stream.addEventListener("snapshot", (e) => load(JSON.parse(e.data)));
stream.addEventListener("change", (e) => { apply(JSON.parse(e.data)); schedule(); });
