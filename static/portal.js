// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  // Confirm destructive actions.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  }, true);
  // Tenant switcher submits on change.
  document.querySelectorAll("[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  // Sidebar toggle on narrow screens.
  var toggle = document.querySelector("[data-nav-toggle]");
  if (toggle) toggle.addEventListener("click", function () {
    var nav = document.getElementById("sidebar");
    var open = nav.classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
  // Show only the credential fields of the chosen auth method.
  document.querySelectorAll("[data-auth-form]").forEach(function (form) {
    var fields = { access_token: ["token"], api_token: ["email", "token"], oauth: ["key", "secret"] };
    function sync() {
      var checked = form.querySelector("input[name=auth_method]:checked");
      var wanted = fields[checked ? checked.value : "access_token"] || [];
      form.querySelectorAll("[data-auth-field]").forEach(function (field) {
        field.hidden = wanted.indexOf(field.getAttribute("data-auth-field")) === -1;
      });
      form.querySelectorAll("[data-auth-guide]").forEach(function (guide) {
        guide.hidden = guide.getAttribute("data-auth-guide") !== (checked ? checked.value : "access_token");
      });
    }
    form.addEventListener("change", sync);
    sync();
  });
  // Scan progress: poll while any scan on the page is queued or running; a scan that
  // starts or ends (status changed to or from an active one) reloads the page, so rows,
  // badges and counts are never left stale.
  var ACTIVE = { queued: true, running: true };
  document.querySelectorAll("[data-progress-url]").forEach(function (box) {
    var url = box.getAttribute("data-progress-url");
    function holder(scan) {
      return box.querySelector('[data-integration="' + scan.integration + '"]') ||
             (box.getAttribute("data-integration") == scan.integration ? box : null);
    }
    function render(scan, row) {
      var target = row.querySelector("[data-scan-state]");
      if (target) {
        target.textContent = scan.active
          ? (scan.total ? "scanning " + scan.done + "/" + scan.total + " repositories" : scan.status + "…")
          : scan.status + (scan.total ? " (" + scan.done + "/" + scan.total + " repositories)" : "");
      }
      var list = row.querySelector("[data-phases]") || box.querySelector("[data-phases]");
      if (list && scan.phases && scan.phases.length) {
        list.textContent = "";
        scan.phases.forEach(function (phase) {
          var item = document.createElement("li");
          item.className = "phase " + phase.state;
          var meter = document.createElement("meter");
          meter.min = 0; meter.max = phase.total || 1; meter.value = phase.done;
          item.appendChild(document.createTextNode(phase.name + " "));
          item.appendChild(meter);
          item.appendChild(document.createTextNode(" " + phase.done + " of " + phase.total + " (" + phase.state + ")"));
          list.appendChild(item);
        });
      }
    }
    function poll() {
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : { scans: [] }; })
        .then(function (data) {
          var active = false, reload = false;
          data.scans.forEach(function (scan) {
            var row = holder(scan);
            if (!row) return;
            var before = row.getAttribute("data-status");
            if (before !== null && before !== scan.status && !(ACTIVE[before] && ACTIVE[scan.status])) reload = true;
            row.setAttribute("data-status", scan.status);
            render(scan, row);
            active = active || scan.active;
          });
          if (reload) { window.location.reload(); return; }
          window.setTimeout(poll, active ? 1500 : 10000);
        })
        .catch(function () { window.setTimeout(poll, 10000); });
    }
    poll();
  });
})();
