// The costroute report page: reads the run's data from the JSON script element
// and draws the sections with Chart.js. Every text from the data goes in with
// textContent, never as HTML, so outputs holding markup show as text.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("report-data").textContent);
  var root = document.getElementById("report");
  // Okabe–Ito colours, told apart by colour-blind readers too.
  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9",
    "#D55E00", "#8C6D1F", "#000000"];
  var FLOOR_COLOUR = "#b42318";

  Chart.defaults.animation = false;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#1d2433";

  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function section(id, title, hint) {
    var node = el("section", { id: id }, [el("h2", {}, [title])]);
    if (hint) node.appendChild(el("p", { "class": "hint" }, [hint]));
    root.appendChild(node);
    return node;
  }

  function empty(name, message) {
    return el("p", { "class": "empty", "data-empty": name }, [message]);
  }

  function colourOf(name) {
    var index = data.candidates.findIndex(function (c) { return c.name === name; });
    return PALETTE[Math.max(index, 0) % PALETTE.length];
  }

  function chartBox(name, caption, height) {
    var canvas = el("canvas", { role: "img", "aria-label": caption || name });
    var figure = el("figure", { "data-chart": name }, [
      el("div", { "class": "chart", style: "height:" + (height || 360) + "px" }, [canvas])]);
    if (caption) figure.appendChild(el("figcaption", {}, [caption]));
    return { figure: figure, canvas: canvas };
  }

  // Axis ticks: three significant digits and no trailing zeros.
  function tickUsd(value) {
    return value === 0 ? "$0" : "$" + Number(Number(value).toPrecision(3));
  }

  // The smallest round number (1, 1.2, 1.5, 2, 2.5, … × 10^k) at or above value.
  function niceCeil(value) {
    if (!(value > 0)) return 1;
    var scale = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10];
    for (var i = 0; i < steps.length; i += 1) {
      if (steps[i] * scale >= value * 1.0001) return steps[i] * scale;
    }
    return 10 * scale;
  }

  // A cost axis spanning more than this ratio is drawn on a log scale.
  function costScale(values, title) {
    var finite = values.filter(function (v) { return v !== null && isFinite(v); });
    var low = Math.min.apply(null, finite);
    var high = Math.max.apply(null, finite);
    var logarithmic = low > 0 && high / low > 20;
    return {
      type: logarithmic ? "logarithmic" : "linear",
      min: logarithmic ? low / 1.5 : 0,
      max: logarithmic ? high * 1.5 : niceCeil(high * 1.08),
      title: { display: true, text: title + (logarithmic ? " (log scale)" : "") },
      ticks: { callback: tickUsd }
    };
  }

  function header() {
    var d = data.decision;
    var top = el("section", { id: "decision" }, [
      el("h1", {}, ["costroute report · " + data.title]),
      el("p", { "class": "sentence", "data-sentence": "" }, [d.sentence]),
      el("p", {}, [
        el("span", { "class": "badge " + d.status }, [d.status.replace("_", " ")]),
        el("span", { "class": "status-text" }, [d.status_text])
      ]),
      el("p", { "class": "reason" }, [d.reason])
    ]);
    if (d.money.length) {
      top.appendChild(el("ul", { "class": "money" }, d.money.map(function (line) {
        return el("li", {}, [line]);
      })));
    }
    top.appendChild(el("ul", { "class": "dials", "aria-label": "dials used" },
      d.dials.map(function (pair) { return el("li", {}, [el("b", {}, [pair[0]]), pair[1]]); })));
    data.notices.forEach(function (notice) {
      top.appendChild(el("p", { "class": "notice" }, [notice]));
    });
    root.appendChild(top);
  }

  function qualityCost() {
    var d = data.decision;
    var node = section("quality-cost", "Quality against cost per result",
      "Each candidate with its 95% intervals; the dashed red line is the floor, " +
      "the grey line the cost-quality frontier; the route is the large diamond.");
    var plotted = data.candidates.filter(function (c) { return c.plotted; });
    if (!plotted.length) {
      node.appendChild(empty("quality-cost", data.charts.message));
    } else {
      var box = chartBox("quality-cost", null);
      node.appendChild(box.figure);
      drawQualityCost(box.canvas, plotted, d.floor);
    }
    if (data.charts.left_out.length) {
      node.appendChild(el("p", { "class": "hint" }, ["Not plotted: " + data.charts.left_out.join("; ") + "."]));
    }
  }

  function drawQualityCost(canvas, plotted, floor) {
    var xs = [];
    var lows = [floor.min];
    plotted.forEach(function (c) {
      xs.push(c.expected);
      if (c.expected_ci) xs.push(c.expected_ci[0], c.expected_ci[1]);
      if (c.quality_ci) lows.push(c.quality_ci[0]);
    });
    var x = costScale(xs, data.charts.cost_axis);
    var datasets = [];
    plotted.forEach(function (c) {
      var colour = colourOf(c.name);
      datasets.push({
        label: c.name + (c.route ? " (route)" : ""),
        data: [{ x: c.expected, y: c.quality }],
        backgroundColor: colour,
        borderColor: c.route ? "#111111" : colour,
        borderWidth: c.route ? 3 : 1,
        pointRadius: c.route ? 11 : 6,
        pointHoverRadius: c.route ? 12 : 8,
        pointStyle: c.route ? "rectRot" : (c.kind === "cascade" ? "triangle" : "circle"),
        candidate: c,
        clip: false,
        order: 0
      });
      if (c.quality_ci) {
        datasets.push(guide([{ x: c.expected, y: c.quality_ci[0] }, { x: c.expected, y: c.quality_ci[1] }], colour));
      }
      if (c.expected_ci) {
        var high = c.expected_ci[1] === null ? x.max : c.expected_ci[1];
        datasets.push(guide([{ x: c.expected_ci[0], y: c.quality }, { x: high, y: c.quality }], colour));
      }
    });
    var front = data.frontier.map(function (name) {
      var c = plotted.find(function (p) { return p.name === name; });
      return { x: c.expected, y: c.quality };
    });
    if (front.length > 1) {
      datasets.push(Object.assign(guide(front, "#8a94a6"), { label: "cost-quality frontier", guide: false, pointStyle: "line", borderDash: [6, 4], borderWidth: 2 }));
    }
    datasets.push(Object.assign(guide([{ x: x.min, y: floor.min }, { x: x.max, y: floor.min }], FLOOR_COLOUR), {
      label: "floor: " + floor.metric + " ≥ " + floor.min, guide: false, pointStyle: "line", borderDash: [4, 4], borderWidth: 2
    }));
    new Chart(canvas, {
      type: "scatter",
      data: { datasets: datasets },
      options: {
        maintainAspectRatio: false,
        scales: {
          x: x,
          y: {
            min: Math.max(0, Math.floor((Math.min.apply(null, lows) - 0.05) * 20) / 20),
            max: 1,
            title: { display: true, text: floor.metric + " (95% interval)" }
          }
        },
        plugins: {
          legend: { labels: { usePointStyle: true, filter: function (item, chart) { return !chart.datasets[item.datasetIndex].guide; } } },
          tooltip: {
            filter: function (item) { return !!item.dataset.candidate; },
            callbacks: {
              label: function (item) {
                var c = item.dataset.candidate;
                return c.name + ": " + data.decision.floor.metric + " " + c.text.quality + ", " + c.text.expected + " per result";
              }
            }
          }
        }
      }
    });
  }

  function guide(points, colour) {
    return {
      data: points, showLine: true, pointRadius: 0, pointHoverRadius: 0, borderColor: colour,
      backgroundColor: colour, borderWidth: 1.5, guide: true, order: 1
    };
  }

  function costs() {
    var node = section("cost", "Cost per result",
      "Total cost ÷ correct results, with its 95% bootstrap interval (dark line); " +
      "and the monthly cost at the task's volume.");
    var priced = data.candidates.filter(function (c) { return c.cost_per_result !== null; });
    var grid = el("div", { "class": "grid" }, []);
    node.appendChild(grid);
    if (!priced.length) {
      grid.appendChild(empty("cost-per-result", "No candidate has a cost per result: none is both priced and right at least once."));
    } else {
      var box = chartBox("cost-per-result", "Cost per result (measured model cost only).", barsHeight(priced));
      grid.appendChild(box.figure);
      drawBars(box.canvas, priced, "cost_per_result", "cost_per_result_ci", "cost per result");
    }
    var monthly = data.candidates.filter(function (c) { return c.monthly !== null; });
    if (!monthly.length) {
      grid.appendChild(empty("monthly", "No candidate has a monthly cost: none is priced."));
    } else {
      var month = chartBox("monthly", data.charts.monthly_note, barsHeight(monthly));
      grid.appendChild(month.figure);
      drawBars(month.canvas, monthly, "monthly", null, "USD a month at " + data.decision.volume.toLocaleString("en-US") + " outputs");
    }
    node.appendChild(candidateTable());
  }

  function barsHeight(rows) {
    return Math.min(480, 90 + 48 * rows.length);
  }

  function drawBars(canvas, rows, field, intervalField, title) {
    var values = rows.map(function (c) { return c[field]; });
    var extents = values.slice();
    rows.forEach(function (c) {
      var ci = intervalField && c[intervalField];
      if (ci) extents.push(ci[0], ci[1]);
    });
    var x = costScale(extents, title);
    if (x.type === "linear") x.min = 0;
    var datasets = [{
      label: title,
      data: values,
      backgroundColor: rows.map(function (c) { return colourOf(c.name); }),
      borderColor: rows.map(function (c) { return c.route ? "#111111" : colourOf(c.name); }),
      borderWidth: rows.map(function (c) { return c.route ? 3 : 0; }),
      rows: rows,
      maxBarThickness: 40,
      order: 1
    }];
    if (intervalField) {
      datasets.push({
        label: "95% interval",
        data: rows.map(function (c) {
          var ci = c[intervalField];
          return ci ? [ci[0], ci[1] === null ? x.max : ci[1]] : null;
        }),
        backgroundColor: "#1d2433",
        grouped: false,
        barPercentage: 0.12,
        rows: rows,
        interval: true,
        order: 0
      });
    }
    new Chart(canvas, {
      type: "bar",
      data: { labels: rows.map(function (c) { return c.name + (c.route ? " ◆" : ""); }), datasets: datasets },
      options: {
        indexAxis: "y",
        maintainAspectRatio: false,
        scales: { x: x },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (item) {
                var c = item.dataset.rows[item.dataIndex];
                if (item.dataset.interval) return "95% interval " + c.text[intervalField];
                return field === "monthly" ? c.text.monthly + " a month" : c.text.cost_per_result + " per result";
              }
            }
          }
        }
      }
    });
  }

  function candidateTable() {
    var heads = ["candidate", "eligible", "quality [95% CI]", "cost/result [95% CI]",
      "expected cost/result [95% CI]", "monthly", "why not"];
    var body = data.candidates.map(function (c) {
      return el("tr", { "class": c.route ? "route" : "" }, [
        el("td", {}, [c.name + (c.route ? " ◆ route" : "")]),
        el("td", {}, [c.eligible ? "yes" : "no"]),
        el("td", { "class": "num" }, [c.text.quality]),
        el("td", { "class": "num" }, [c.text.cost_per_result + " " + c.text.cost_per_result_ci]),
        el("td", { "class": "num" }, [c.text.expected + " " + c.text.expected_ci]),
        el("td", { "class": "num" }, [c.text.monthly]),
        el("td", {}, [c.why_not || ""])
      ]);
    });
    return table("candidates", heads, body, [2, 3, 4, 5]);
  }

  function table(name, heads, rows, numeric) {
    var head = el("tr", {}, heads.map(function (h, i) {
      return el("th", { "class": numeric.indexOf(i) >= 0 ? "num" : "" }, [h]);
    }));
    return el("div", { "class": "scroll", style: "margin-top:14px" }, [
      el("table", { "data-table": name }, [el("thead", {}, [head]), el("tbody", {}, rows)])]);
  }

  function cascade() {
    var sweep = data.cascade;
    var node = section("cascade", "Cascade: quality and cost as the escalation policy moves");
    if (!sweep.available) {
      node.appendChild(empty("cascade", sweep.message));
      return;
    }
    node.appendChild(el("p", { "class": "hint" }, [
      "The cheap model " + sweep.cheap + " answers; a check escalates doubtful items to " +
      sweep.strong + ". Every policy a router could run, replayed on the run's calls; the " +
      "chosen one (picked on the fit half) is the large diamond. " +
      (sweep.is_route ? "This cascade is the route." : "This cascade is not the route.")]));
    var box = chartBox("cascade", "Quality (left axis) and expected cost per result (right axis) against the share of items escalated.");
    node.appendChild(box.figure);
    drawCascade(box.canvas, sweep);
    var splits = sweep.splits.map(function (s) {
      return el("tr", {}, [el("td", {}, [s.split]), el("td", { "class": "num" }, [String(s.items)]),
        el("td", { "class": "num" }, [s.quality]), el("td", { "class": "num" }, [s.cost]), el("td", { "class": "num" }, [s.rate])]);
    });
    node.appendChild(table("cascade-splits", ["chosen policy on", "items", sweep.metric, "expected cost/result", "escalated"], splits, [1, 2, 3, 4]));
  }

  function drawCascade(canvas, sweep) {
    var points = sweep.points;
    var chosen = points.filter(function (p) { return p.chosen; });
    function line(field, axis, colour, label) {
      return {
        label: label, yAxisID: axis, showLine: true, borderColor: colour, backgroundColor: colour,
        pointRadius: 3, points: points, clip: false,
        data: points.map(function (p) { return { x: p.rate * 100, y: p[field] }; })
      };
    }
    function mark(field, axis, colour, inLegend) {
      return {
        label: "chosen policy", hideLegend: !inLegend, yAxisID: axis, pointStyle: "rectRot", pointRadius: 10,
        borderColor: "#111111", borderWidth: 2, backgroundColor: colour, points: chosen, clip: false,
        data: chosen.map(function (p) { return { x: p.rate * 100, y: p[field] }; })
      };
    }
    var costs = points.map(function (p) { return p.cost; }).filter(function (v) { return v !== null; });
    var datasets = [
      line("quality", "q", PALETTE[0], sweep.metric),
      line("cost", "c", PALETTE[1], "expected cost per result"),
      mark("quality", "q", PALETTE[0], true),
      mark("cost", "c", PALETTE[1], false),
      Object.assign(guide([{ x: 0, y: sweep.floor }, { x: 100, y: sweep.floor }], FLOOR_COLOUR), {
        label: "floor " + sweep.metric + " ≥ " + sweep.floor, yAxisID: "q", guide: false, pointStyle: "line", borderDash: [4, 4]
      })
    ];
    new Chart(canvas, {
      type: "scatter",
      data: { datasets: datasets },
      options: {
        maintainAspectRatio: false,
        scales: {
          x: { min: 0, max: 100, title: { display: true, text: "items escalated (%)" } },
          q: { position: "left", min: 0, max: 1, title: { display: true, text: sweep.metric } },
          c: {
            position: "right", min: 0, max: niceCeil(Math.max.apply(null, costs.concat([0])) * 1.08),
            grid: { drawOnChartArea: false },
            title: { display: true, text: "expected cost per result" },
            ticks: { callback: tickUsd }
          }
        },
        plugins: {
          legend: { labels: { usePointStyle: true, filter: function (item, chart) { return !chart.datasets[item.datasetIndex].hideLegend; } } },
          tooltip: {
            filter: function (item) { return !!item.dataset.points; },
            callbacks: {
              label: function (item) {
                var p = item.dataset.points[item.dataIndex];
                var q = p.quality === null ? "—" : p.quality.toFixed(3);
                return p.label + ": " + sweep.metric + " " + q + ", " + p.cost_text + " per result, " + Math.round(p.rate * 100) + "% escalated";
              }
            }
          }
        }
      }
    });
  }

  function disagreements() {
    var found = data.disagreements;
    var node = section("disagreements", "Items where candidates disagree",
      "Verdicts differ, or the scorer read different answers. Each candidate's first sample; long texts are cut at " +
      found.cell_chars + " characters.");
    if (found.message) node.appendChild(el("p", { "class": "notice" }, [found.message]));
    if (!found.rows.length) return;
    var text = el("input", { type: "search", id: "filter-text", placeholder: "Filter by any text: id, input, target, output", "aria-label": "filter text" });
    var selects = found.models.map(function (model, index) {
      var select = el("select", { id: "filter-model-" + index, "data-model": model }, [
        el("option", { value: "any" }, ["any"]), el("option", { value: "right" }, ["right"]),
        el("option", { value: "wrong" }, ["wrong"])]);
      return select;
    });
    var count = el("span", { "class": "count", id: "filter-count" }, []);
    node.appendChild(el("div", { "class": "filters" }, [text].concat(selects.map(function (select) {
      return el("label", {}, [select.getAttribute("data-model"), select]);
    })).concat([count])));
    var rows = found.rows.map(disagreementRow);
    var heads = ["item", "input", "target"].concat(found.models);
    node.appendChild(el("div", { "class": "scroll" }, [el("table", { "data-table": "disagreements" }, [
      el("thead", {}, [el("tr", {}, heads.map(function (h) { return el("th", {}, [h]); }))]),
      el("tbody", {}, rows.map(function (r) { return r.node; }))])]));
    function apply() {
      var needle = text.value.trim().toLowerCase();
      var wanted = selects.map(function (s) { return s.value; });
      var shown = 0;
      rows.forEach(function (r) {
        var keep = (!needle || r.haystack.indexOf(needle) >= 0) && wanted.every(function (want, i) {
          return want === "any" || (want === "right") === (r.correct[i] === true);
        });
        r.node.hidden = !keep;
        if (keep) shown += 1;
      });
      count.textContent = shown + " of " + rows.length + " items";
    }
    text.addEventListener("input", apply);
    selects.forEach(function (s) { s.addEventListener("change", apply); });
    apply();
  }

  function disagreementRow(row) {
    var cells = [el("td", {}, [row.id]), el("td", {}, [el("pre", { "class": "text" }, [row.input])]),
      el("td", {}, [el("pre", { "class": "text" }, [row.target])])];
    row.cells.forEach(function (cell) {
      var verdict = cell.correct === null ? "" : (cell.correct ? "✓ right" : "✗ wrong");
      cells.push(el("td", {}, [
        el("div", { "class": cell.correct ? "right" : "wrong" }, [verdict + " · score " + cell.score]),
        el("pre", { "class": "text" }, [cell.output])]));
    });
    var haystack = [row.id, row.input, row.target].concat(row.cells.map(function (c) { return c.output; }));
    return {
      node: el("tr", { "data-item": row.id }, cells),
      haystack: haystack.join("\n").toLowerCase(),
      correct: row.cells.map(function (c) { return c.correct; })
    };
  }

  function provenance() {
    var c = data.costs;
    var node = section("costs", "How the costs were obtained",
      "Prices as recorded with the run when it started, " + c.taken_at + " (catalog: " + c.catalog + "). " +
      "Measuring this batch cost " + c.measurement + ".");
    var rows = c.rows.map(function (r) {
      return el("tr", {}, [el("td", {}, [r.model]), el("td", {}, [r.how]), el("td", {}, [r.price]),
        el("td", { "class": "num" }, [r.cost]), el("td", { "class": "num" }, [r.spent]),
        el("td", { "class": "num" }, [r.provider]), el("td", { "class": "num" }, [r.calls + " / " + r.cached_calls])]);
    });
    node.appendChild(table("cost-sources", ["candidate", "how its cost was obtained", "price", "cost", "paid by this run", "provider-reported", "calls / cached"], rows, [3, 4, 5, 6]));
    if (c.judge) node.appendChild(el("p", { "class": "hint" }, [c.judge]));
    node.appendChild(el("h2", { style: "margin-top:16px" }, ["Price snapshot"]));
    if (!c.prices.length) {
      node.appendChild(empty("prices", "No prices were recorded with this run."));
      return;
    }
    var prices = c.prices.map(function (p) {
      return el("tr", {}, [el("td", {}, [p.model]), el("td", {}, [p.source]), el("td", {}, [p.catalog_version]),
        el("td", { "class": "num" }, [p.input_mtok]), el("td", { "class": "num" }, [p.output_mtok]),
        el("td", { "class": "num" }, [p.cache_read_mtok]), el("td", { "class": "num" }, [p.cache_write_mtok]),
        el("td", { "class": "num" }, [p.hourly]), el("td", { "class": "num" }, [p.gpus])]);
    });
    node.appendChild(table("prices", ["model", "source", "catalog", "input /Mtok", "output /Mtok", "cache read /Mtok", "cache write /Mtok", "per hour", "GPUs"], prices, [3, 4, 5, 6, 7, 8]));
  }

  header();
  qualityCost();
  costs();
  cascade();
  disagreements();
  provenance();
  document.body.setAttribute("data-ready", "true");
})();
