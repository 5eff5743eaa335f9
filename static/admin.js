// taskflow dashboard behaviour: live-refresh pause, theme switch, row selection and
// filter forms. No inline scripts anywhere (the Content-Security-Policy forbids them).
(function () {
  "use strict";

  var LIVE_KEY = "taskflow-live-paused";
  var THEME_KEY = "taskflow-theme";

  function stored(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }

  function store(key, value) {
    try { window.localStorage.setItem(key, value); } catch (e) { /* ignore */ }
  }

  function paused() {
    return stored(LIVE_KEY) === "1";
  }

  // -- live refresh ---------------------------------------------------------------
  function showLiveState() {
    var button = document.getElementById("live-toggle");
    if (!button) { return; }
    var isPaused = paused();
    button.setAttribute("aria-pressed", isPaused ? "true" : "false");
    button.classList.toggle("paused", isPaused);
    button.querySelector(".label").textContent = isPaused ? "Paused" : "Live";
    document.body.classList.toggle("live-paused", isPaused);
  }

  function refreshAll() {
    if (!window.htmx) { return; }
    document.querySelectorAll(".live").forEach(function (element) {
      window.htmx.trigger(element, "refresh");
    });
  }

  function hasSelection(element) {
    var form = element.closest("form");
    return !!(form && form.querySelector("input[name=task_id]:checked"));
  }

  // A live element asks for a refresh: skip it while paused, while the tab is hidden,
  // or while the user has rows selected in it (a refresh would clear the selection).
  document.addEventListener("htmx:beforeRequest", function (event) {
    var element = event.detail && event.detail.elt;
    if (!element || !element.classList || !element.classList.contains("live")) { return; }
    if (paused() || document.hidden || hasSelection(element)) {
      event.preventDefault();
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !paused()) { refreshAll(); }
  });

  // -- theme ----------------------------------------------------------------------
  function currentTheme() {
    var explicit = document.documentElement.getAttribute("data-theme");
    if (explicit) { return explicit; }
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function showTheme() {
    var button = document.getElementById("theme-toggle");
    if (button) {
      button.querySelector(".label").textContent = currentTheme() === "dark" ? "Light" : "Dark";
    }
  }

  // -- selection on the runs and failures pages ---------------------------------------
  function updateSelection() {
    var button = document.getElementById("replay-selected-button");
    var count = document.querySelectorAll("input[name=task_id]:checked").length;
    if (button) {
      button.disabled = count === 0;
      button.textContent = count ? "Replay " + count + " selected" : "Replay selected";
    }
    // Bulk action buttons (<button data-selection="Cancel">) of the Runs and Failures pages.
    document.querySelectorAll("button[data-selection]").forEach(function (bulk) {
      var label = bulk.getAttribute("data-selection");
      bulk.disabled = count === 0;
      bulk.textContent = label + (count ? " " + count : "") + " selected";
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.classList && target.classList.contains("select-all")) {
      var table = target.closest("table");
      table.querySelectorAll("input[name=task_id]").forEach(function (box) {
        box.checked = target.checked;
      });
    }
    if (target.name === "task_id" || (target.classList && target.classList.contains("select-all"))) {
      updateSelection();
      return;
    }
    var form = target.closest && target.closest("form[data-autosubmit]");
    if (form && target.tagName === "SELECT") {
      form.requestSubmit();
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target.closest && event.target.closest("button");
    if (!target) { return; }
    if (target.id === "live-toggle") {
      store(LIVE_KEY, paused() ? "0" : "1");
      showLiveState();
      if (!paused()) { refreshAll(); }
    } else if (target.id === "theme-toggle") {
      var next = currentTheme() === "dark" ? "light" : "dark";
      document.documentElement.setAttribute("data-theme", next);
      store(THEME_KEY, next);
      showTheme();
    }
  });

  // -- running times ----------------------------------------------------------------
  // A running task's time (<span class="elapsed" data-elapsed="seconds">) counts on from
  // the server's figure by this page's clock, so a skewed clock cannot shift it. Same
  // format as the server's (taskflow/admin/_util.py, elapsed_text).
  function elapsedText(seconds) {
    var whole = Math.max(Math.floor(seconds), 0);
    if (whole < 60) { return whole + " s"; }
    var minutes = Math.floor(whole / 60);
    if (minutes < 60) { return minutes + " min " + (whole % 60) + " s"; }
    var hours = Math.floor(minutes / 60);
    if (hours < 48) { return hours + " h " + (minutes % 60) + " min"; }
    return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
  }

  function tickElapsed() {
    var now = Date.now();
    document.querySelectorAll(".elapsed[data-elapsed]").forEach(function (element) {
      if (!element.hasAttribute("data-since")) {
        var seconds = parseFloat(element.getAttribute("data-elapsed")) || 0;
        element.setAttribute("data-since", String(now - seconds * 1000));
      }
      var since = parseFloat(element.getAttribute("data-since"));
      var shown = elapsedText((now - since) / 1000);
      if (element.textContent !== shown) { element.textContent = shown; }
    });
  }

  window.setInterval(tickElapsed, 1000);

  // New log lines arrived: drop the "no log lines yet" note and keep the end in view.
  document.addEventListener("htmx:afterSwap", function () {
    var lines = document.getElementById("log-lines");
    if (lines && lines.querySelector(".log-line")) {
      var note = document.getElementById("no-logs");
      if (note) { note.remove(); }
    }
    updateSelection();
  });

  document.addEventListener("DOMContentLoaded", function () {
    showLiveState();
    showTheme();
    updateSelection();
  });
})();
