// The command center's only script and style sheet, compiled into the binary (no CDN: a command vehicle
// without coverage serves them). The script builds live rows with textContent, never innerHTML.

enum Assets {
    static let script = #"""
    "use strict";
    (function () {
      var url = document.body.getAttribute("data-events");
      var state = document.getElementById("live-state");
      var table = document.getElementById("live-table");
      if (!url || !window.EventSource) { return; }
      var source = new EventSource(url);
      function say(text, cls) { if (state) { state.textContent = text; state.className = "live " + cls; } }
      source.onopen = function () { say("live", "on"); };
      source.onerror = function () { say("reconnecting", "off"); };
      source.addEventListener("end", function () { source.close(); say("session ended: log in again", "off"); });
      function cell(tr, text) { var td = document.createElement("td"); td.textContent = text; tr.appendChild(td); return td; }
      function pad(n) { return (n < 10 ? "0" : "") + n; }
      function when(ms) {
        var d = new Date(ms + 480 * 60000);
        return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
      }
      source.addEventListener("incident", function (e) {
        if (!table) { return; }
        var r = JSON.parse(e.data);
        var body = table.tBodies[0];
        var old = body.querySelector('tr[data-id="' + r.id.replace(/[^0-9a-f]/g, "") + '"]');
        var tr = document.createElement("tr");
        tr.setAttribute("data-id", r.id);
        tr.className = "p-" + r.priority + " new";
        cell(tr, when(r.reportedAt));
        var idCell = document.createElement("td");
        var a = document.createElement("a");
        a.href = "/incidents/" + encodeURIComponent(r.id);
        a.textContent = r.id.slice(0, 8);
        idCell.appendChild(a);
        tr.appendChild(idCell);
        cell(tr, r.county); cell(tr, r.station); cell(tr, r.category); cell(tr, r.priority); cell(tr, r.status);
        cell(tr, r.summary).className = "summary";
        cell(tr, r.units.join(", "));
        if (old) { body.replaceChild(tr, old); } else { body.insertBefore(tr, body.firstChild); }
        var empty = document.getElementById("empty");
        if (empty) { empty.remove(); }
      });
    })();
    """#

    static let style = """
    body { font: 14px/1.4 "Noto Sans", "DejaVu Sans", sans-serif; margin: 0; color: #1b1f24; background: #f4f5f7; }
    header { display: flex; gap: 1.2em; align-items: center; background: #12263f; color: #fff; padding: .5em 1em; }
    header a { color: #cfe3ff; margin-right: 1em; text-decoration: none; } header .brand { font-weight: bold; }
    header .who { margin-left: auto; color: #dfe6ee; } header form.inline { margin: 0; }
    main { padding: 1em; } main.login { max-width: 22em; margin: 3em auto; background: #fff; padding: 2em; border-radius: 6px; }
    main.login label { display: block; margin: .6em 0; } main.login input { width: 100%; }
    h1 { font-size: 1.4em; margin: .2em 0 .6em; } h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
    table { border-collapse: collapse; background: #fff; margin-bottom: .8em; }
    th, td { border: 1px solid #d5d9de; padding: .25em .5em; text-align: left; vertical-align: top; }
    table.incidents { width: 100%; } td.summary { max-width: 28em; overflow-wrap: anywhere; }
    caption { text-align: left; font-weight: bold; padding: .2em 0; } td.n { text-align: right; }
    .tiles { display: flex; gap: 1em; margin-bottom: 1em; } .tile { background: #fff; padding: .6em 1em; border-radius: 6px; }
    .tile b { font-size: 1.6em; display: block; }
    .grid { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
    .p-urgent td:first-child { border-left: 4px solid #c62828; } .p-high td:first-child { border-left: 4px solid #ef6c00; }
    tr.new { background: #fff8d6; } tr.stale td { color: #b71c1c; } .dup { color: #6a1b9a; font-size: .85em; }
    .live.on { color: #9cff9c; } .live.off { color: #ffb4a9; }
    .error, .warn, .overdue { color: #b71c1c; } .flash { background: #e3f7e3; padding: .4em; } .none { color: #777; }
    .filters label { margin-right: .6em; } .filters input[type=text] { width: 8em; }
    .actions form { display: inline-block; margin: 0 1em .5em 0; background: #fff; padding: .4em; border-radius: 4px; }
    td.ok { color: #1b5e20; } td.bad { color: #b71c1c; font-weight: bold; }
    table.history ul { margin: 0; padding-left: 1.1em; }
    .suspect { color: #8a4b00; font-size: .85em; } .suspects form.inline { display: inline; margin: 0; padding: 0; }
    tr.alarm td { color: #b71c1c; font-weight: bold; } .note { color: #555; font-size: .9em; }
    .map { background: #fff; display: inline-block; border-radius: 6px; padding: .3em; } .map svg { display: block; max-width: 100%; height: auto; }
    """
}
