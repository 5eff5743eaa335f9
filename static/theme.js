// Applies the saved colour theme before the page paints (loaded synchronously in <head>).
(function () {
  "use strict";
  try {
    var saved = window.localStorage.getItem("taskflow-theme");
    if (saved === "light" || saved === "dark") {
      document.documentElement.setAttribute("data-theme", saved);
    }
  } catch (e) {
    /* storage disabled: follow the system theme */
  }
})();
