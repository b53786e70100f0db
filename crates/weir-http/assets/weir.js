// The dashboard's live panels: one server-sent event stream per page (the
// element with data-live names it). Each event is a JSON object of figures: an
// element with data-k="name" shows figure `name`; a chart (data-chart="a,b,c",
// data-labels="A,B,C") plots those figures over the last two minutes; an event's
// `rows` (a stream's live tail) are added to the table body marked data-tail.
(function () {
  "use strict";
  var KEEP = 120;
  var TAIL_ROWS = 200;
  var TAIL_FIELDS = ["offset", "time", "key", "headers", "body"];

  function tail(body, rows) {
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.dataset.offset = String(row.offset);
      TAIL_FIELDS.forEach(function (field) {
        var td = document.createElement("td");
        td.textContent = row[field];
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    while (body.rows.length > TAIL_ROWS + 1) { body.deleteRow(1); }
  }
  var COLORS = ["#1f6feb", "#2e7d32", "#8e44ad", "#b35900", "#c62828", "#00838f"];

  function chart(el) {
    var keys = el.dataset.chart.split(",");
    var labels = (el.dataset.labels || el.dataset.chart).split(",");
    var data = [[]].concat(keys.map(function () { return []; }));
    var series = [{}].concat(keys.map(function (k, i) {
      return { label: labels[i], stroke: COLORS[i % COLORS.length], width: 1.5,
               points: { show: false } };
    }));
    var plot = new uPlot({
      width: Math.max(260, el.clientWidth), height: 160, series: series,
      axes: [{}, { size: 56 }], legend: { live: false },
      scales: {
        // The last two minutes, however few points there are yet.
        x: { time: true, range: function (u, min, max) { return [max - KEEP, max]; } },
        y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } }
      }
    }, data, el);
    return {
      push: function (at, figures) {
        data[0].push(at);
        keys.forEach(function (k, i) { data[i + 1].push(figures[k] == null ? null : figures[k]); });
        if (data[0].length > KEEP) { data.forEach(function (d) { d.shift(); }); }
        plot.setData(data);
      },
      resize: function () { plot.setSize({ width: Math.max(260, el.clientWidth), height: 160 }); }
    };
  }

  function start() {
    var live = document.querySelector("[data-live]");
    if (!live || !window.EventSource) { return; }
    var charts = Array.prototype.map.call(document.querySelectorAll("[data-chart]"), chart);
    window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
    var source = new EventSource(live.dataset.live);
    source.onmessage = function (event) {
      var figures = JSON.parse(event.data);
      document.querySelectorAll("[data-k]").forEach(function (el) {
        var v = figures[el.dataset.k];
        if (v !== undefined) { el.textContent = v; }
      });
      var tailBody = document.querySelector("[data-tail]");
      if (tailBody && figures.rows) { tail(tailBody, figures.rows); }
      var at = Date.now() / 1000;
      charts.forEach(function (c) { c.push(at, figures); });
      live.dataset.updated = String(at);
    };
    // A page left closes its stream: a browser holds few connections per host
    // (six), and a page kept in the back-forward cache would hold one for nothing.
    document.addEventListener("htmx:beforeSwap", function () { source.close(); }, { once: true });
    window.addEventListener("pagehide", function () { source.close(); });
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) { window.location.reload(); }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
