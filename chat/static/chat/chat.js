// The chat page's script: sends what the user writes to the API and shows the session's event stream.
//
// The page arrives with the stored messages and `data-after`, the event after which the stream carries everything
// else (a reply still being written included). Each message is shown once per seq, whether it came with the page,
// from a POST's answer or from the stream; a reply's text is built from its `delta` events, started again at each
// `reset`. After a dropped connection the browser resumes with Last-Event-ID; after a reload the page does, from
// `data-after`. No gap, no repeated text.
"use strict";

(() => {
  const chat = document.querySelector("[data-chat]");
  if (!chat) return;
  const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const messages = $("messages");
  const form = $("composer-form");
  const composer = $("composer");
  const sendButton = $("send");
  const stopButton = $("stop");
  const endButton = $("end");
  const errorBox = $("error");
  const connectionBox = $("connection");
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
    const who = document.createElement("span");
    who.className = "message__who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const text = document.createElement("div");
    text.className = "message__text";
    text.dataset.testid = "message-text";
    element.append(who, text);
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
      element.append(noteElement);
    }
    noteElement.textContent = note;
  }

  function showStored(message) {
    const following = atBottom();
    const element = ensureMessage(message.seq, message.role);
    element.querySelector(".message__text").textContent = message.content;
    element.dataset.final = "true";
    element.dataset.status = message.status || "complete";
    element.removeAttribute("aria-busy");
    if (message.role === "assistant") {
      setNote(element, TEXT.reply_notes[message.status] || "");
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
    const following = atBottom();
    if (attempt > shownAttempt) {
      reply.dataset.attempt = String(attempt);
      textElement.textContent = ""; // a retried turn writes its reply again
    }
    textElement.append(text);
    reply.setAttribute("aria-busy", "true");
    writingChanged();
    if (following) toBottom();
  }

  function writingChanged() {
    const writing = messages.querySelector('[data-role="assistant"][data-final="false"]');
    stopButton.hidden = !writing || status !== "active";
    if (writing) messages.setAttribute("aria-busy", "true");
    else messages.removeAttribute("aria-busy");
  }

  // Follows the conversation's end as it grows, unless the reader has scrolled up to read.
  function atBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 150;
  }

  function toBottom() {
    window.scrollTo({ top: document.documentElement.scrollHeight });
  }

  // The session's state.

  function showStatus(newStatus) {
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
        if (!open.querySelector(".message__text").textContent) open.remove(); // a reply that never started
      }
      writingChanged();
      stopFollowing();
    }
  }

  // The event stream.

  const handlers = {
    message: (data) => showStored(data),
    delta: (data) => writeReply(data.turn, data.attempt, data.text),
    reset: (data) => writeReply(data.turn, data.attempt, ""),
    turn_failed: (data) => {
      const element = messageElement(data.turn);
      if (element) setNote(element, data.detail);
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
      if (composer.value === content) composer.value = "";
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
    $("chat-title").textContent = content.length > 80 ? `${content.slice(0, 79)}…` : content;
    document.title = `${content.slice(0, 40)} · Chat`;
    showStatus("active");
    endButton.hidden = false;
    $("delete").hidden = false;
    if (chat.dataset.staff === "true") {
      $("admin-link").href = chat.dataset.adminSearchUrl + encodeURIComponent(sessionId);
      $("temporal-link").href = started.temporal_ui_url;
      $("staff-links").hidden = false;
    }
    addToSessionList(url, content);
    if (started.message) {
      showStored(started.message);
      if (started.message.reply_seq) awaitReply(started.message.reply_seq);
    }
    follow();
  }

  function addToSessionList(url, content) {
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
    title.textContent = content.length > 48 ? `${content.slice(0, 47)}…` : content;
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
  deleteButton.addEventListener("click", async () => {
    if (!window.confirm("Delete this chat? Its messages are removed for good.")) return;
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
  window.addEventListener("popstate", () => location.reload());

  // On a narrow screen the list of chats starts folded, out of the conversation's way.
  if (window.matchMedia("(max-width: 700px)").matches) $("session-fold")?.removeAttribute("open");
  // The newest messages in view; a reply the page arrived in the middle of waits for its next words.
  history.scrollRestoration = "manual"; // a reload shows the newest messages, not where the page was
  toBottom();
  writingChanged();
  follow();
})();
