// The battle page: one websocket, the protocol of arena/events.py.
// Model text is only ever written with textContent while streaming; the
// finished answer's HTML comes from the server, already sanitised.
"use strict";

(function () {
  const root = document.getElementById("arena");
  const mode = root.dataset.mode;
  const statusEl = document.getElementById("status");
  const promptEl = document.getElementById("prompt");
  const sendBtn = document.getElementById("send");
  const stopBtn = document.getElementById("stop");
  const regenBtn = document.getElementById("regenerate");
  const newBtn = document.getElementById("new-round");
  const revealEl = document.getElementById("reveal");
  const voteBtns = Array.from(document.querySelectorAll("[data-vote]"));
  const STORE_KEY = "arena.battle." + mode;

  let ws = null;
  let retry = 0;
  let battle = null; // battle info from the last battle.state
  let turns = []; // [{index, user, a: answer|null, b: answer|null}]
  let pendingText = null; // a message waiting for its battle to start
  let resyncAsked = false;

  function setStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.classList.toggle("error", Boolean(isError));
  }

  function send(event) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(event));
      return true;
    }
    setStatus("Not connected; reconnecting…", true);
    return false;
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    // batch=1: a frame may carry several events, as a JSON array in order.
    ws = new WebSocket(proto + "//" + location.host + root.dataset.wsPath + "?batch=1");
    ws.onopen = function () {
      retry = 0;
      const saved = sessionStorage.getItem(STORE_KEY);
      if (saved) {
        send({ type: "battle.resume", battle: saved });
        setStatus("Reconnected.");
      } else {
        setStatus("Ready. Type a prompt to start.");
      }
      render();
    };
    ws.onmessage = function (msg) {
      let data;
      try {
        data = JSON.parse(msg.data);
      } catch (e) {
        return;
      }
      (Array.isArray(data) ? data : [data]).forEach(function (event) {
        const handler = event && handlers[event.type];
        if (handler) handler(event);
      });
      render();
    };
    ws.onclose = function () {
      const wait = Math.min(10000, 500 * Math.pow(2, retry++));
      setStatus("Connection lost; retrying in " + Math.round(wait / 1000) + " s…", true);
      render();
      setTimeout(connect, wait);
    };
  }

  function answer(turnIndex, side) {
    const turn = turns.find(function (t) { return t.index === turnIndex; });
    return turn ? turn[side] : null;
  }

  function askResync() {
    if (!resyncAsked && battle) {
      resyncAsked = true;
      send({ type: "battle.resume", battle: battle.id });
    }
  }

  const handlers = {
    "battle.state": function (e) {
      resyncAsked = false;
      battle = e.battle;
      turns = e.turns;
      sessionStorage.setItem(STORE_KEY, battle.id);
      if (pendingText !== null && turns.length === 0) {
        const text = pendingText;
        pendingText = null;
        send({ type: "message.send", text: text });
      }
    },
    "gen.start": function (e) {
      const a = answer(e.turn, e.side);
      if (!a || a.attempt !== e.attempt) return askResync();
      a.status = "streaming";
    },
    "gen.delta": function (e) {
      const a = answer(e.turn, e.side);
      if (!a || a.attempt !== e.attempt) return askResync();
      a.status = "streaming";
      const have = a.text.length;
      if (e.offset === have) {
        a.text += e.text;
      } else if (e.offset < have) {
        // Part of this delta was already in the resynced text.
        a.text += e.text.slice(have - e.offset);
      } else {
        askResync(); // a gap: fetch the saved text
      }
    },
    "gen.done": function (e) {
      const a = answer(e.turn, e.side);
      if (!a || a.attempt !== e.attempt) return askResync();
      a.status = e.stats.finish_reason === "stopped" ? "stopped" : "done";
      a.text = e.text;
      a.html = e.html;
      a.stats = e.stats; // tokens only: timings wait for the reveal
      revealedStatsAsk();
    },
    "gen.error": function (e) {
      const a = answer(e.turn, e.side);
      if (!a || a.attempt !== e.attempt) return askResync();
      a.status = "error";
      a.error = { code: e.code, message: e.message };
      revealedStatsAsk();
    },
    "vote.recorded": function (e) {
      setStatus("Vote recorded. Thank you!");
      if (battle) {
        battle.models = e.models;
        battle.vote = e.choice;
        battle.status = "voted";
      }
      (e.sources || []).forEach(function (s) {
        const a = answer(s.turn, s.side);
        if (a) a.sources = s.sources;
      });
      // The speeds come with the names: before the vote they would tell the models apart.
      (e.stats || []).forEach(function (s) {
        const a = answer(s.turn, s.side);
        if (a) a.stats = s.stats;
      });
    },
    "error": function (e) {
      setStatus(e.message + " (" + e.code + ")", true);
      if (e.code === "no_battle" || e.code === "forbidden") {
        sessionStorage.removeItem(STORE_KEY);
        battle = null;
        turns = [];
      }
    },
  };

  // Named mode is revealed from the start, but gen.done carries no timings
  // (the worker does not know the mode): once a turn is over, the saved
  // state brings them.
  function revealedStatsAsk() {
    if (battle && battle.mode === "named" && lastAnswers().length === 2 && lastAnswers().every(finished)) {
      askResync();
    }
  }

  function lastAnswers() {
    const last = turns[turns.length - 1];
    return last ? [last.a, last.b].filter(Boolean) : [];
  }

  function finished(a) {
    return a.status === "done" || a.status === "stopped" || a.status === "error";
  }

  function derived() {
    const open = battle !== null && battle.status === "open";
    const last = lastAnswers();
    const allDone = last.length === 2 && last.every(finished);
    const failed = last.some(function (a) { return a.status === "error"; });
    const streaming = last.some(function (a) { return !finished(a); });
    return {
      canVote: open && allDone && !failed,
      // A voted battle sends into a new round.
      canSend: !open || ((turns.length === 0 || (allDone && !failed)) && battle.turns_left > 0),
      streaming: streaming,
      canRegen: open && turns.length > 0 && allDone,
    };
  }

  // A RAG answer's passages, shown once the names are revealed. Text only:
  // passages are documents' words, never markup.
  function renderSources(sources) {
    const box = document.createElement("details");
    box.className = "sources";
    box.open = true;
    const summary = document.createElement("summary");
    summary.textContent = sources.length
      ? "Sources: " + sources.length + " passage" + (sources.length > 1 ? "s" : "") + " from the knowledge base"
      : "Sources: no passage of the knowledge base matched";
    box.appendChild(summary);
    const list = document.createElement("ol");
    sources.forEach(function (s) {
      const item = document.createElement("li");
      item.className = "source";
      const head = document.createElement("div");
      head.className = "source-head";
      head.textContent = [s.document, s.section].filter(Boolean).join(" › ");
      const score = document.createElement("span");
      score.className = "source-score";
      score.title = "Cosine similarity of the passage to the question";
      score.textContent = " similarity " + Number(s.similarity).toFixed(2);
      head.appendChild(score);
      const text = document.createElement("p");
      text.className = "source-text";
      text.textContent = s.text;
      item.appendChild(head);
      item.appendChild(text);
      list.appendChild(item);
    });
    box.appendChild(list);
    return box;
  }

  function renderPane(side) {
    const log = document.getElementById("log-" + side);
    log.replaceChildren();
    turns.forEach(function (turn) {
      const user = document.createElement("div");
      user.className = "msg user";
      user.textContent = turn.user;
      log.appendChild(user);
      const a = turn[side];
      const bot = document.createElement("div");
      bot.className = "msg bot";
      if (a) {
        bot.dataset.status = a.status;
        bot.dataset.turn = String(turn.index);
        if (a.html && (a.status === "done" || a.status === "stopped")) {
          bot.innerHTML = a.html; // sanitised on the server (arena/markdown.py)
        } else {
          bot.textContent = a.text;
        }
        if (Array.isArray(a.sources)) bot.appendChild(renderSources(a.sources));
        if (a.status === "error" && a.error) {
          const err = document.createElement("p");
          err.className = "gen-error";
          err.textContent = "⚠ " + a.error.message;
          bot.appendChild(err);
        }
      }
      log.appendChild(bot);
    });
    const last = turns[turns.length - 1];
    const stats = document.getElementById("stats-" + side);
    stats.textContent = statsText(last && last[side] && last[side].stats);
    log.scrollTop = log.scrollHeight;
  }

  // Tokens while anonymous; speed (tokens/s, time to first token) once revealed.
  function statsText(s) {
    if (!s || !s.tokens) return "";
    const parts = [s.tokens + " tokens"];
    if (s.ttft_ms != null) parts.push(Math.round(s.ttft_ms) + " ms to first token");
    if (s.tokens_per_s != null) parts.push(s.tokens_per_s + " tok/s");
    return parts.join(" · ");
  }

  function render() {
    renderPane("a");
    renderPane("b");
    const d = derived();
    const connected = ws && ws.readyState === WebSocket.OPEN;
    voteBtns.forEach(function (b) { b.disabled = !(connected && d.canVote); });
    sendBtn.disabled = !(connected && d.canSend);
    stopBtn.disabled = !(connected && d.streaming);
    regenBtn.disabled = !(connected && d.canRegen);
    const models = battle && battle.models;
    document.getElementById("name-a").textContent = models ? "· " + models.a : "";
    document.getElementById("name-b").textContent = models ? "· " + models.b : "";
    if (battle && battle.status === "voted" && models) {
      revealEl.hidden = false;
      const labels = { a: "Model A (" + models.a + ") won", b: "Model B (" + models.b + ") won", tie: "A tie", both_bad: "Both were bad" };
      revealEl.textContent = "Your vote: " + (labels[battle.vote] || battle.vote) + ". Model A was " + models.a + ", model B was " + models.b + ". Start a new round to keep going.";
    } else {
      revealEl.hidden = true;
    }
  }

  document.getElementById("composer").addEventListener("submit", function (ev) {
    ev.preventDefault();
    const text = promptEl.value.trim();
    if (!text) return;
    if (battle === null || battle.status !== "open") {
      pendingText = text;
      const start = { type: "battle.start", mode: mode };
      if (mode === "named") {
        start.contender_a = document.getElementById("pick-a").value;
        start.contender_b = document.getElementById("pick-b").value;
      }
      if (!send(start)) return;
    } else if (!send({ type: "message.send", text: text })) {
      return;
    }
    promptEl.value = "";
    setStatus("Generating…");
  });
  promptEl.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      if (!sendBtn.disabled) document.getElementById("composer").requestSubmit();
    }
  });
  voteBtns.forEach(function (b) {
    b.addEventListener("click", function () {
      if (send({ type: "vote", choice: b.dataset.vote })) setStatus("Vote sent…");
    });
  });
  stopBtn.addEventListener("click", function () { send({ type: "stop" }); });
  regenBtn.addEventListener("click", function () { send({ type: "regenerate" }); setStatus("Regenerating…"); });
  newBtn.addEventListener("click", function () {
    sessionStorage.removeItem(STORE_KEY);
    battle = null;
    turns = [];
    pendingText = null;
    setStatus("New round. Type a prompt to start.");
    render();
  });
  if (mode === "named") {
    document.getElementById("pick").addEventListener("change", function () { newBtn.click(); });
  }
  connect();
})();
