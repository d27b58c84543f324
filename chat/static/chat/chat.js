// The chat page's script: sends what the user writes to the API and shows the session's event stream.
//
// The page arrives with the stored messages and `data-after`, the event after which the stream carries everything
// else (a reply still being written included). Each message is shown once per seq, whether it came with the page,
// from a POST's answer or from the stream; a reply's text is built from its `delta` events, started again at each
// `reset`. After a dropped connection the browser resumes with Last-Event-ID; after a reload the page does, from
// `data-after`. No gap, no repeated text.
//
// A reply's tool calls are cards above its text, one per call id, drawn from `tool_call` and `tool_result` events,
// from the stored reply's `tool_calls`, and from the answer to an Approve or Deny; the page renders a stored reply's
// cards with the same markup.
//
// A reply is Markdown: shown rendered (and sanitized), from its whole text so far, as it is written and once stored;
// the page renders the replies it arrived with the same way. What a user writes stays plain text.
//
// A screen reader hears each reply once it is finished, whole (the announcer), not a word at a time as it streams.
//
// The last reply can be regenerated: the one it replaces comes again on the stream, `replaced`, and is folded away
// (as the page folds a stored one); the new one is written after it under a seq of its own.
"use strict";

(() => {
  const chat = document.querySelector("[data-chat]");
  if (!chat) return;
  const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const messages = $("messages");
  const conversation = messages.closest('[role="log"]');
  const form = $("composer-form");
  const composer = $("composer");
  const sendButton = $("send");
  const stopButton = $("stop");
  const endButton = $("end");
  const errorBox = $("error");
  const connectionBox = $("connection");
  const titleElement = $("chat-title");
  const renameButton = $("rename");
  const renameForm = $("rename-form");
  const titleInput = $("title-input");
  const titleError = $("title-error");
  const jumpButton = $("jump");
  // The page's words, as chat/pages.py gives them.
  const TEXT = JSON.parse(document.getElementById("chat-text").textContent);

  let sessionId = chat.dataset.sessionId || null;
  let status = chat.dataset.status;
  let lastEventId = chat.dataset.after || null;
  let source = null;
  let reconnectTimer = null;

  // The API, as this page's logged-in user (Django's session cookie and CSRF token).

  class ApiError extends Error {}

  async function api(method, path, body) {
    let response;
    try {
      response = await fetch(`/api/${path}`, {
        method,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError("The server can't be reached. Check your connection and try again.");
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      const detail = answer.detail || `The server answered ${response.status}.`;
      throw new ApiError(retry && response.status !== 429 ? `${detail} Try again in ${retry} s.` : detail);
    }
    return answer;
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  // What a screen reader says as the chat goes on (page.html's announcer; the conversation itself is not a live
  // region): a reply once it is finished, whole, not a word at a time as it is written; a call that waits for the
  // user's approval; a failed turn; the chat's end. What comes together is said together.
  const announcer = $("announcer");
  const ANNOUNCED_MOST = 2000; // characters of a reply; the rest is on the page
  let announcing = [];

  function announce(text) {
    if (!text) return;
    if (!announcing.length) {
      announcer.textContent = ""; // the same words again are said again
      setTimeout(() => {
        announcer.textContent = announcing.join(" ");
        announcing = [];
      }, 100);
    }
    announcing.push(text);
  }

  // A reply's words as a screen reader should hear them: its rendered text, without its code blocks' heads (the
  // language, Copy), a space between blocks.
  function spokenReply(element) {
    const text = element.querySelector(".message__text").cloneNode(true);
    for (const head of text.querySelectorAll(".code__head")) head.remove();
    for (const block of text.querySelectorAll("p, li, pre, blockquote, h1, h2, h3, h4, h5, h6, th, td")) block.append(" ");
    const words = text.textContent.split(/\s+/).filter(Boolean).join(" ");
    const note = element.querySelector(".message__note")?.textContent;
    return `Assistant: ${truncate(words, ANNOUNCED_MOST)}${note ? ` (${note})` : ""}`;
  }

  // The chat's title: the heading, the document's title and the chat's entry in the list, cut as the server cuts
  // them (Django's truncatechars).

  const truncate = (text, length) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);
  let documentTitle = document.title;

  // A new chat's title, as chat.models.title_from gives it: the first message's start, on one line.
  function titleFrom(content) {
    const line = content.split(/\s+/).filter(Boolean).join(" ");
    return line.length <= 60 ? line : `${line.slice(0, 59).trimEnd()}…`;
  }

  function showTitle(title) {
    titleElement.textContent = truncate(title, 80);
    titleElement.dataset.title = title;
    documentTitle = `${truncate(title, 40)} · Chat`;
    document.title = document.title.startsWith(UNSEEN) ? UNSEEN + documentTitle : documentTitle;
    const item = document.querySelector(`[data-testid="session-item"][data-session-id="${sessionId}"] .sessions__title`);
    if (item) item.textContent = truncate(title, 48);
  }

  // Renaming in place: Enter or leaving the field saves, Escape cancels; a refused title stays, with the reason.
  let renaming = false;
  let savingTitle = false;

  function startRename() {
    renaming = true;
    titleInput.value = titleElement.dataset.title;
    showTitleError("");
    titleElement.classList.add("visually-hidden"); // the page's heading still, for a screen reader
    renameButton.hidden = true;
    renameForm.hidden = false;
    titleInput.focus();
    titleInput.select();
  }

  function stopRename() {
    renaming = false;
    const hadFocus = renameForm.contains(document.activeElement); // not when the user went elsewhere (a blur)
    renameForm.hidden = true;
    titleElement.classList.remove("visually-hidden");
    renameButton.hidden = false;
    if (hadFocus) renameButton.focus();
  }

  function showTitleError(text) {
    titleError.textContent = text;
    titleError.hidden = !text;
    if (text) titleInput.setAttribute("aria-invalid", "true");
    else titleInput.removeAttribute("aria-invalid");
  }

  async function saveTitle() {
    if (!renaming || savingTitle) return;
    const title = titleInput.value;
    if (title.trim() === titleElement.dataset.title) {
      stopRename();
      return;
    }
    savingTitle = true;
    titleInput.readOnly = true;
    try {
      const session = await api("PATCH", `sessions/${encodeURIComponent(sessionId)}/`, { title });
      showTitle(session.title);
      stopRename();
    } catch (error) {
      showTitleError(error instanceof ApiError ? error.message : "Something went wrong; try again.");
    } finally {
      savingTitle = false;
      titleInput.readOnly = false;
    }
  }

  // Messages: one element per seq, in seq order.

  function messageElement(seq) {
    return messages.querySelector(`[data-seq="${seq}"]`);
  }

  function ensureMessage(seq, role) {
    let element = messageElement(seq);
    if (element) return element;
    element = document.createElement("li");
    element.className = `message message--${role}`;
    element.dataset.testid = "message";
    element.dataset.seq = String(seq);
    element.dataset.role = role;
    element.dataset.final = "false";
    const head = make("p", "message__head");
    const who = make("span", "message__who");
    who.textContent = role === "user" ? "You" : "Assistant";
    head.append(who);
    const text = make("div", "message__text", "message-text");
    element.append(head, text);
    const later = [...messages.children].find((other) => Number(other.dataset.seq) > seq);
    messages.insertBefore(element, later || null);
    $("empty").hidden = true;
    return element;
  }

  function setNote(element, note) {
    let noteElement = element.querySelector(".message__note");
    if (!note) {
      noteElement?.remove();
      return;
    }
    if (!noteElement) {
      noteElement = document.createElement("p");
      noteElement.className = "message__note";
      noteElement.dataset.testid = "message-note";
      element.insertBefore(noteElement, element.querySelector(".message__actions")); // Regenerate stays last
    }
    noteElement.textContent = note;
  }

  function showStored(message) {
    const following = atBottom();
    const element = ensureMessage(message.seq, message.role);
    const textElement = element.querySelector(".message__text");
    if (message.role === "assistant") showReply(textElement, message.content);
    else textElement.textContent = message.content;
    element.dataset.final = "true";
    element.dataset.status = message.status || "complete";
    showTime(element, message.created_at);
    element.removeAttribute("aria-busy");
    if (message.role === "assistant") {
      setNote(element, message.status === REPLACED ? "" : TEXT.reply_notes[message.status] || "");
      for (const call of message.tool_calls || []) showToolCall(element, call);
      if (message.status === REPLACED) fold(element);
    }
    writingChanged();
    if (following) toBottom();
  }

  function awaitReply(seq) {
    const element = messageElement(seq);
    if (element?.dataset.final === "true") return;
    ensureMessage(seq, "assistant").setAttribute("aria-busy", "true");
    writingChanged();
  }

  function writeReply(turn, attempt, text) {
    const element = messageElement(turn);
    if (element?.dataset.final === "true") return; // stored already: its text is whole
    const reply = ensureMessage(turn, "assistant");
    const shownAttempt = Number(reply.dataset.attempt || 0);
    if (attempt < shownAttempt) return;
    const textElement = reply.querySelector(".message__text");
    let written = replyText.get(textElement) || "";
    if (attempt > shownAttempt) {
      reply.dataset.attempt = String(attempt);
      written = ""; // a retried turn writes its reply again
    }
    showReplyLater(textElement, written + text);
    reply.setAttribute("aria-busy", "true");
    writingChanged();
  }

  function writingChanged() {
    const writing = messages.querySelector('[data-role="assistant"][data-final="false"]');
    stopButton.hidden = !writing || status !== "active";
    if (writing) conversation.setAttribute("aria-busy", "true");
    else conversation.removeAttribute("aria-busy");
    regenerateChanged(writing);
  }

  // Another answer to the last question: the last reply offers Regenerate once it is final, while the chat is open
  // and nothing is being written. The reply it replaces comes again on the stream, `replaced`, and is folded away;
  // the new one is written after it under a seq of its own.

  const REPLACED = "replaced";

  function regenerateChanged(writing) {
    const last = messages.lastElementChild;
    const offered = status === "active" && !writing && last?.dataset.role === "assistant"
      && last.dataset.final === "true" && last.dataset.status !== REPLACED ? last : null;
    for (const actions of messages.querySelectorAll(".message__actions")) {
      if (actions.parentNode !== offered) actions.remove();
    }
    if (!offered || offered.querySelector(".message__actions")) return;
    const actions = make("div", "message__actions");
    const button = make("button", "link message__regenerate", "regenerate");
    button.type = "button";
    button.textContent = "Regenerate";
    actions.append(button);
    offered.append(actions);
  }

  async function regenerate(button) {
    const reply = button.closest('[data-testid="message"]');
    if (document.activeElement === button) {
      reply.tabIndex = -1; // a disabled button drops the focus to the page's top: it waits on the reply
      reply.focus({ preventScroll: true });
    }
    button.disabled = true;
    showError("");
    try {
      const regenerated = await api("POST", `sessions/${encodeURIComponent(sessionId)}/regenerate/`);
      const following = atBottom();
      awaitReply(regenerated.reply_seq);
      if (following) toBottom();
    } catch (error) {
      showError(error instanceof ApiError ? error.message : "Something went wrong; try again.");
      button.disabled = false;
      if (document.activeElement === reply && button.isConnected) button.focus();
    }
  }

  // A replaced reply, its tool calls and text folded under a summary (page.html's markup).
  function fold(reply) {
    if (reply.querySelector(".message__fold")) return;
    const details = make("details", "message__fold", "replaced-reply");
    const summary = make("summary");
    summary.textContent = TEXT.reply_notes[REPLACED];
    details.append(summary, ...reply.querySelectorAll(":scope > .message__tools, :scope > .message__text"));
    reply.querySelector(".message__head").after(details);
  }

  // Replies as Markdown: markdown-it renders CommonMark with tables and bare links (raw HTML in a reply is text, an
  // image a link: it would load from wherever the reply points), DOMPurify cleans the result once more, and each code
  // block gets its language and a Copy button. Without the two libraries (a script that didn't load) a reply is plain
  // text, as a user's message is.

  const markdown = window.markdownit && window.DOMPurify
    ? window.markdownit({ html: false, linkify: true, typographer: false }).disable("image")
    : null;
  // What markdown-it writes, and nothing else.
  const SANITIZE = {
    ALLOWED_TAGS: ["p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "code", "pre",
      "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td"],
    ALLOWED_ATTR: ["href", "title", "class", "start", "style"],
    RETURN_DOM_FRAGMENT: true,
  };
  if (markdown) {
    window.DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
      // A table column's alignment, a code block's language: no other style or class.
      if (data.attrName === "style") data.keepAttr = /^text-align:(left|right|center)$/.test(data.attrValue);
      if (data.attrName === "class") data.keepAttr = /^language-\S+$/.test(data.attrValue);
    });
    window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A" && node.hasAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
  }

  const replyText = new WeakMap(); // a reply's text element → the Markdown written so far
  const blockSource = new WeakMap(); // a rendered block → the sanitized HTML it came from
  const toRender = new Set();
  let renderScheduled = false;

  function showReply(textElement, text) {
    replyText.set(textElement, text);
    toRender.delete(textElement);
    renderReply(textElement);
  }

  // Deltas come faster than frames: the reply is rendered from its whole text at most once a frame.
  function showReplyLater(textElement, text) {
    replyText.set(textElement, text);
    toRender.add(textElement);
    if (renderScheduled) return;
    renderScheduled = true;
    const render = () => {
      renderScheduled = false;
      const following = atBottom();
      for (const pending of toRender) renderReply(pending);
      toRender.clear();
      if (following) toBottom();
    };
    if (document.hidden) setTimeout(render, 100); // a hidden tab gets no frames
    else requestAnimationFrame(render);
  }

  // The blocks that came out as before stay the same elements (a selection, a focused Copy button, a code block
  // scrolled sideways stay put); the rest is replaced.
  function renderReply(textElement) {
    const text = replyText.get(textElement) || "";
    if (!markdown) {
      textElement.textContent = text;
      return;
    }
    textElement.classList.add("message__text--markdown");
    const fresh = markdownBlocks(text);
    const shown = [...textElement.childNodes];
    let same = 0;
    while (same < shown.length && same < fresh.length && blockSource.has(shown[same])
           && blockSource.get(shown[same]) === blockSource.get(fresh[same])) same += 1;
    for (const node of shown.slice(same)) node.remove();
    textElement.append(...fresh.slice(same));
  }

  function markdownBlocks(text) {
    const fragment = window.DOMPurify.sanitize(markdown.render(text), SANITIZE);
    const blocks = [];
    for (const node of [...fragment.childNodes]) {
      if (node.nodeType === Node.TEXT_NODE && !node.data.trim()) continue; // the line breaks between blocks
      const block = node.nodeName === "PRE" ? codeBlock(node) : node;
      if (node.nodeName === "PRE" || node.nodeName === "TABLE") node.tabIndex = 0; // they scroll sideways
      blockSource.set(block, node.outerHTML ?? node.textContent);
      blocks.push(block);
    }
    return blocks;
  }

  function codeBlock(pre) {
    const language = /^language-(\S+)$/.exec(pre.querySelector("code")?.className || "")?.[1] || "";
    const block = make("div", "code", "code-block");
    const head = make("div", "code__head");
    const label = make("span", "code__language", "code-language");
    label.textContent = language || "code";
    const copy = make("button", "code__copy", "code-copy");
    copy.type = "button";
    copy.textContent = "Copy";
    const said = make("span", "visually-hidden"); // "Copied", for a screen reader
    said.setAttribute("role", "status");
    head.append(label, copy, said);
    block.append(head, pre);
    return block;
  }

  const copyTimers = new WeakMap();

  async function copyCode(button) {
    const block = button.closest(".code");
    const code = block.querySelector("pre").textContent.replace(/\n$/, "");
    let outcome;
    try {
      await navigator.clipboard.writeText(code);
      outcome = "Copied";
    } catch {
      outcome = "Couldn't copy"; // no clipboard (a page not served over HTTPS) or permission refused
    }
    button.textContent = outcome;
    block.querySelector("[role=status]").textContent = outcome;
    clearTimeout(copyTimers.get(button));
    copyTimers.set(button, setTimeout(() => {
      button.textContent = "Copy";
      block.querySelector("[role=status]").textContent = "";
    }, 2000));
  }

  // Follows the conversation's end as it grows, unless the reader has scrolled up to read; then "Jump to latest"
  // is offered instead.
  function atBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 150;
  }

  function toBottom() {
    window.scrollTo({ top: document.documentElement.scrollHeight });
  }

  let jumpScheduled = false;

  function jumpChanged() {
    if (jumpScheduled) return;
    jumpScheduled = true;
    requestAnimationFrame(() => {
      jumpScheduled = false;
      jumpButton.hidden = atBottom();
    });
  }

  // When each message was written, relative to now ("3 min ago"), the exact local time on hover.

  const MINUTE = 60 * 1000;

  function showTime(element, createdAt) {
    if (!createdAt) return;
    let time = element.querySelector(".message__time");
    if (!time) {
      time = make("time", "message__time", "message-time");
      time.setAttribute("aria-hidden", "true"); // as page.html's
      element.querySelector(".message__head").append(" ", time);
    }
    time.dateTime = createdAt;
    refreshTime(time, new Date());
  }

  function refreshTime(time, now) {
    const date = new Date(time.dateTime);
    if (Number.isNaN(date.getTime())) return;
    const ago = relativeTime(date, now);
    if (time.textContent !== ago) time.textContent = ago;
    time.title = date.toLocaleString(undefined, { dateStyle: "full", timeStyle: "medium" });
  }

  function relativeTime(date, now) {
    const ago = now - date;
    if (ago < MINUTE) return "just now"; // a clock a little behind the server's too
    if (ago < 60 * MINUTE) return `${Math.floor(ago / MINUTE)} min ago`;
    const midnight = (day) => new Date(day.getFullYear(), day.getMonth(), day.getDate());
    const days = Math.round((midnight(now) - midnight(date)) / (24 * 60 * MINUTE)); // calendar days, DST or not
    if (days === 0) return `${Math.floor(ago / (60 * MINUTE))} h ago`;
    if (days === 1) return "yesterday";
    const year = date.getFullYear() === now.getFullYear() ? undefined : "numeric";
    return date.toLocaleDateString(undefined, { day: "numeric", month: "short", year });
  }

  function refreshTimes() {
    const now = new Date();
    for (const time of messages.querySelectorAll(".message__time")) refreshTime(time, now);
  }

  // A reply that finished while the tab was in the background marks the tab's title until the tab is seen.

  const UNSEEN = "● ";

  function replyFinished() {
    if (document.hidden && !document.title.startsWith(UNSEEN)) document.title = UNSEEN + documentTitle;
  }

  // The composer grows with its text, up to 40% of the window's height; then it scrolls.
  function fitComposer() {
    if (form.hidden) return;
    composer.style.height = "auto";
    const wanted = composer.scrollHeight + composer.offsetHeight - composer.clientHeight;
    const most = Math.floor(window.innerHeight * 0.4);
    composer.style.height = `${Math.min(wanted, most)}px`;
    composer.style.overflowY = wanted > most ? "auto" : "hidden";
  }

  // Tool calls: one card per call id, inside its reply, above the reply's text.

  const TOOL_FINISHED = new Set(TEXT.tool_finished);
  const AWAITING_APPROVAL = "awaiting_approval";

  // A call's stage: a card never goes back to an earlier one (an event replayed after a newer answer, say).
  function toolStage(status) {
    if (TOOL_FINISHED.has(status)) return 2;
    return status === AWAITING_APPROVAL ? 0 : 1;
  }

  // Call ids are `call-<reply>-<step>-<index>` (chat.projections): the last two numbers give the call's place.
  function toolOrder(callId) {
    const match = /-(\d+)-(\d+)$/.exec(callId);
    return match ? Number(match[1]) * 100000 + Number(match[2]) : Infinity;
  }

  // The arguments compactly, `name: <JSON value>` a line, as chat/pages.py's args_text writes them.
  function argsText(args) {
    if (typeof args === "string") return args; // not JSON, as the model sent them
    if (args && typeof args === "object" && !Array.isArray(args)) {
      return Object.entries(args)
        .map(([name, value]) => `${name}: ${JSON.stringify(value)}`)
        .join("\n");
    }
    return JSON.stringify(args);
  }

  function make(tag, className, testid) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (testid) made.dataset.testid = testid;
    return made;
  }

  // The markup of page.html's cards.
  function toolCard(call) {
    const card = make("div", "tool", "tool-card");
    card.setAttribute("role", "group");
    card.setAttribute("aria-label", `Tool call: ${call.name}`);
    card.tabIndex = -1; // focus lands here when its buttons go away
    card.dataset.callId = call.call_id;
    const head = make("p", "tool__head");
    const name = make("span", "tool__name");
    const icon = make("span");
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = "🔧";
    name.append(icon, ` ${call.name}`);
    const badge = make("span", "badge tool__status", "tool-status");
    head.append(name, " ", badge);
    const args = make("code", "tool__args", "tool-args");
    args.textContent = argsText(call.args);
    args.hidden = !args.textContent;
    const error = make("p", "tool__error", "tool-error");
    error.setAttribute("role", "alert");
    error.hidden = true;
    card.append(head, args, error);
    return card;
  }

  // What a call that waits for approval asks, as chat/pages.py words it.
  function toolRequest(name) {
    return TEXT.tool_requests[name] || TEXT.tool_request.replace("{name}", name);
  }

  function toolAsk(name) {
    const ask = make("div", "tool__ask", "tool-ask");
    const request = make("p", "tool__request");
    request.textContent = toolRequest(name);
    const actions = make("div", "tool__actions");
    const approve = make("button", "button", "tool-approve");
    approve.type = "button";
    approve.textContent = "Approve";
    const reason = make("input", "tool__reason", "tool-reason");
    reason.type = "text";
    reason.maxLength = 1000;
    reason.setAttribute("aria-label", "Reason for denying (optional)");
    reason.placeholder = "Reason (optional)"; // the label says for what
    const deny = make("button", "button button--quiet", "tool-deny");
    deny.type = "button";
    deny.textContent = "Deny";
    const denying = make("span", "tool__deny"); // the reason stays beside Deny when the row wraps
    denying.append(reason, deny);
    actions.append(approve, denying);
    ask.append(request, actions);
    return ask;
  }

  function showToolCall(reply, call) {
    const tools = reply.querySelector(".message__tools") || make("div", "message__tools", "tool-calls");
    if (!tools.parentNode) reply.querySelector(".message__text").before(tools); // in a replaced reply's fold too
    let card = tools.querySelector(`[data-call-id="${CSS.escape(call.call_id)}"]`);
    if (card && toolStage(call.status) < toolStage(card.dataset.status)) return;
    if (!card) {
      card = toolCard(call);
      const later = [...tools.children].find((other) => toolOrder(other.dataset.callId) > toolOrder(call.call_id));
      tools.insertBefore(card, later || null);
    }
    card.dataset.status = call.status;
    const badge = card.querySelector(".tool__status");
    badge.textContent = TEXT.tool_status_labels[call.status] || call.status;
    badge.className = `badge tool__status tool__status--${call.status}`;

    let ask = card.querySelector(".tool__ask");
    if (call.status === AWAITING_APPROVAL && !ask) {
      ask = toolAsk(call.name);
      card.querySelector(".tool__error").before(ask);
    } else if (call.status !== AWAITING_APPROVAL && ask) {
      const hadFocus = ask.contains(document.activeElement);
      ask.remove();
      if (hadFocus) card.focus(); // not lost to the page's top
    }

    // A tool_result event carries the result's start only: it never shortens one shown whole.
    const result = call.result || "";
    let shown = card.querySelector(".tool__result-text");
    if (result && !(shown && shown.textContent.length > result.length && shown.textContent.startsWith(result))) {
      if (!shown) {
        const details = make("details", "tool__result", "tool-result");
        const summary = make("summary");
        summary.textContent = "Result";
        shown = make("pre", "tool__result-text");
        shown.tabIndex = 0; // it scrolls when long
        details.append(summary, shown);
        card.append(details);
      }
      shown.textContent = result;
    }
  }

  function toolEvent(call) {
    const following = atBottom();
    if (!messageElement(call.turn)) awaitReply(call.turn);
    const card = messages.querySelector(`[data-call-id="${CSS.escape(call.call_id)}"]`);
    const asking = call.status === AWAITING_APPROVAL && card?.dataset.status !== AWAITING_APPROVAL;
    showToolCall(messageElement(call.turn), call);
    if (asking) announce(`${toolRequest(call.name)} ${TEXT.tool_approve_hint}`);
    if (following) toBottom();
  }

  async function decide(card, approve) {
    const buttons = [...card.querySelectorAll(".tool__ask button")];
    const error = card.querySelector(".tool__error");
    const reason = approve ? "" : card.querySelector(".tool__reason").value.trim();
    // A disabled button drops the focus to the page's top: it waits on the card, one Tab before the buttons.
    if (card.querySelector(".tool__ask").contains(document.activeElement)) card.focus();
    for (const button of buttons) button.disabled = true;
    error.hidden = true;
    try {
      const path = `sessions/${encodeURIComponent(sessionId)}/tool-calls/${encodeURIComponent(card.dataset.callId)}/`;
      const call = await api("POST", `${path}${approve ? "approve" : "deny"}/`, reason ? { reason } : undefined);
      showToolCall(card.closest('[data-testid="message"]'), call);
    } catch (problem) {
      // A 409 means it was decided elsewhere (or can't be yet): the stream brings what became of it.
      error.textContent = problem instanceof ApiError ? problem.message : "Something went wrong; try again.";
      error.hidden = false;
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  // The session's state.

  function showStatus(newStatus) {
    const ending = status === "active" && newStatus !== "active";
    status = newStatus;
    const badge = $("session-status");
    badge.textContent = TEXT.status_labels[newStatus] || newStatus;
    badge.className = `badge badge--${newStatus}`;
    badge.hidden = false;
    const item = document.querySelector(`[data-testid="session-item"][data-session-id="${sessionId}"] .badge`);
    if (item) {
      item.textContent = badge.textContent;
      item.className = badge.className;
    }
    if (newStatus !== "active") {
      form.hidden = true;
      endButton.hidden = true;
      const notice = $("closed-notice");
      notice.textContent = TEXT.closed_notices[newStatus] || "This chat can take no more messages.";
      notice.hidden = false;
      for (const open of messages.querySelectorAll('[data-final="false"]')) {
        // A reply that never started; one that called tools keeps its cards.
        if (!replyText.get(open.querySelector(".message__text")) && !open.querySelector(".tool")) open.remove();
      }
      writingChanged();
      stopFollowing();
      if (ending) announce(notice.textContent);
    }
  }

  // The event stream.

  const handlers = {
    message: (data) => {
      const finishing = data.role === "assistant" && messageElement(data.seq)?.dataset.final !== "true";
      showStored(data);
      if (finishing) {
        replyFinished();
        if (data.status !== REPLACED) announce(spokenReply(messageElement(data.seq)));
      }
    },
    delta: (data) => writeReply(data.turn, data.attempt, data.text),
    reset: (data) => writeReply(data.turn, data.attempt, ""),
    tool_call: toolEvent,
    tool_result: toolEvent,
    turn_failed: (data) => {
      const element = messageElement(data.turn);
      if (element) setNote(element, data.detail);
      announce(data.detail);
    },
    session_ended: (data) => showStatus(data.status),
  };

  function follow() {
    if (!sessionId || status !== "active") return;
    stopFollowing();
    const query = lastEventId ? `?after=${encodeURIComponent(lastEventId)}` : "";
    source = new EventSource(`/api/sessions/${encodeURIComponent(sessionId)}/events/${query}`);
    for (const [type, handle] of Object.entries(handlers)) {
      source.addEventListener(type, (event) => {
        lastEventId = event.lastEventId || lastEventId;
        handle(JSON.parse(event.data));
      });
    }
    source.addEventListener("open", () => {
      connectionBox.hidden = true;
    });
    source.addEventListener("error", () => {
      if (status !== "active") return;
      connectionBox.textContent = "Reconnecting…";
      connectionBox.hidden = false;
      if (source.readyState === EventSource.CLOSED) {
        // The server refused (or answered an error): the browser won't retry by itself.
        reconnectTimer = setTimeout(follow, 2000);
      }
    });
  }

  function stopFollowing() {
    clearTimeout(reconnectTimer);
    if (source) source.close();
    source = null;
  }

  // What the user does.

  async function send() {
    const content = composer.value;
    if (!content.trim() || sendButton.disabled) return;
    sendButton.disabled = true;
    showError("");
    try {
      if (sessionId) {
        const posted = await api("POST", `sessions/${encodeURIComponent(sessionId)}/messages/`, { content });
        showStored(posted);
        if (posted.reply_seq) awaitReply(posted.reply_seq);
        toBottom(); // what they sent, and the reply to come
      } else {
        const started = await api("POST", "sessions/", { content });
        becomeConversation(started, content);
      }
      // The text the user sent is kept until the API took it; what they typed meanwhile stays.
      if (composer.value === content) {
        composer.value = "";
        fitComposer();
      }
    } catch (error) {
      showError(error instanceof ApiError ? error.message : "Something went wrong; your message is still here.");
    } finally {
      sendButton.disabled = false;
      composer.focus();
    }
  }

  function becomeConversation(started, content) {
    sessionId = started.session_id;
    const url = chat.dataset.conversationUrl.replace("SESSION_ID", sessionId);
    history.pushState({}, "", url);
    showStatus("active");
    endButton.hidden = false;
    $("delete").hidden = false;
    if (chat.dataset.staff === "true") {
      $("admin-link").href = chat.dataset.adminSearchUrl + encodeURIComponent(sessionId);
      $("temporal-link").href = started.temporal_ui_url;
      $("staff-links").hidden = false;
    }
    addToSessionList(url);
    showTitle(titleFrom(content));
    renameButton.hidden = false;
    if (started.message) {
      showStored(started.message);
      if (started.message.reply_seq) awaitReply(started.message.reply_seq);
    }
    follow();
  }

  function addToSessionList(url) {
    $("no-sessions")?.remove();
    const list = document.querySelector('[data-testid="session-list"]');
    for (const current of list.querySelectorAll("[aria-current]")) current.removeAttribute("aria-current");
    const item = document.createElement("li");
    item.dataset.testid = "session-item";
    item.dataset.sessionId = sessionId;
    const link = document.createElement("a");
    link.href = url;
    link.setAttribute("aria-current", "page");
    const title = document.createElement("span");
    title.className = "sessions__title";
    const meta = document.createElement("span");
    meta.className = "sessions__meta";
    const badge = document.createElement("span");
    badge.className = "badge badge--active";
    badge.textContent = TEXT.status_labels.active;
    meta.append(badge, " just now");
    link.append(title, meta);
    item.append(link);
    list.prepend(item);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  composer.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  stopButton.addEventListener("click", async () => {
    stopButton.disabled = true;
    showError("");
    try {
      await api("POST", `sessions/${encodeURIComponent(sessionId)}/stop/`);
    } catch (error) {
      showError(error.message);
    } finally {
      stopButton.disabled = false;
    }
  });
  endButton.addEventListener("click", async () => {
    endButton.disabled = true;
    showError("");
    try {
      const final = await api("POST", `sessions/${encodeURIComponent(sessionId)}/end/`);
      showStatus(final.status);
    } catch (error) {
      showError(error.message);
    } finally {
      endButton.disabled = false;
    }
  });
  const deleteButton = $("delete");
  const deleteDialog = $("delete-dialog");
  deleteButton.addEventListener("click", () => {
    deleteDialog.returnValue = ""; // what Escape leaves
    deleteDialog.showModal();
  });
  deleteDialog.addEventListener("close", async () => {
    if (deleteDialog.returnValue !== "delete") return; // Cancel or Escape: focus goes back to Delete chat
    deleteDialog.returnValue = "";
    deleteButton.disabled = true;
    showError("");
    try {
      await api("DELETE", `sessions/${encodeURIComponent(sessionId)}/`);
      location.assign(deleteButton.dataset.newChatUrl);
    } catch (error) {
      showError(error.message);
      deleteButton.disabled = false;
    }
  });
  messages.addEventListener("click", (event) => {
    const copy = event.target.closest(".code__copy");
    if (copy) copyCode(copy);
    const button = event.target.closest('[data-testid="tool-approve"], [data-testid="tool-deny"]');
    if (button) decide(button.closest(".tool"), button.dataset.testid === "tool-approve");
    const again = event.target.closest(".message__regenerate");
    if (again) regenerate(again);
  });
  messages.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.isComposing || !event.target.matches(".tool__reason")) return;
    event.preventDefault(); // Enter in the reason denies, with it
    const deny = event.target.closest(".tool").querySelector('[data-testid="tool-deny"]');
    if (!deny.disabled) deny.click();
  });
  renameButton.addEventListener("click", startRename);
  renameForm.addEventListener("submit", (event) => {
    event.preventDefault();
    saveTitle();
  });
  titleInput.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || savingTitle) return;
    event.preventDefault();
    stopRename();
  });
  titleInput.addEventListener("blur", () => saveTitle());
  composer.addEventListener("input", fitComposer);
  jumpButton.addEventListener("click", () => {
    toBottom();
    jumpButton.hidden = true;
    if (!form.hidden) composer.focus({ preventScroll: true }); // not lost with the button
  });
  window.addEventListener("scroll", jumpChanged, { passive: true });
  window.addEventListener("resize", () => {
    fitComposer();
    jumpChanged();
  });
  new ResizeObserver(jumpChanged).observe(messages); // a reply growing below the reader
  setInterval(refreshTimes, MINUTE);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    document.title = documentTitle;
    refreshTimes(); // a hidden tab's timers may have slept
  });
  window.addEventListener("popstate", () => location.reload());

  // The stored replies the page arrived with, rendered as the stream renders them.
  for (const textElement of messages.querySelectorAll('[data-role="assistant"] .message__text')) {
    showReply(textElement, textElement.textContent);
  }
  // The newest messages in view; a reply the page arrived in the middle of waits for its next words.
  history.scrollRestoration = "manual"; // a reload shows the newest messages, not where the page was
  refreshTimes();
  fitComposer();
  toBottom();
  writingChanged();
  follow();
})();
