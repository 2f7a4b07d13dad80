// ClaudeStore dashboard: progressive enhancement only; every page works without this file.
"use strict";
(function () {
  // The live balance: server-sent events from /dashboard/balance/stream.
  var balance = document.querySelector("[data-live-balance]");
  if (balance && window.EventSource) {
    var source = new EventSource("/dashboard/balance/stream");
    source.addEventListener("balance", function (e) {
      var d = JSON.parse(e.data);
      balance.textContent = d.display;
      balance.setAttribute("data-balance", d.balance);
    });
  }
  // A pending purchase: poll its status and reload the page once it changes.
  var purchase = document.querySelector("[data-purchase-status]");
  if (purchase && window.fetch) {
    var initial = purchase.getAttribute("data-purchase-status");
    var url = purchase.getAttribute("data-status-url");
    var timer = setInterval(function () {
      fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (d && d.status !== initial) { clearInterval(timer); window.location.reload(); }
        })
        .catch(function () {});
    }, 1500);
  }
  // Buttons that ask before they act (revoke, refund, suspend).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
})();
