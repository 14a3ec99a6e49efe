/* Draws every chart block of a page (lsi.plots.Figure.html) with the vega bundle the book ships
   in _static/lsi/vega.js. Thumbnail and link paths in the specs are relative to the site root. */
(function () {
  "use strict";
  var root = document.documentElement.dataset.content_root || "";
  var relative = /^(?![a-z][a-z0-9+.-]*:|\/|#)/i;

  function rebase(spec) {
    var sets = spec.datasets || {};
    Object.keys(sets).forEach(function (name) {
      sets[name].forEach(function (row) {
        ["image", "href"].forEach(function (key) {
          if (typeof row[key] === "string" && relative.test(row[key])) row[key] = root + row[key];
        });
      });
    });
    return spec;
  }

  function draw(block) {
    var source = block.querySelector("script.lsi-chart-spec");
    var slot = block.querySelector(".lsi-chart-live");
    if (!source || !slot || typeof vegaEmbed !== "function") return;
    var spec = rebase(JSON.parse(source.textContent));
    vegaEmbed(slot, spec, {renderer: "svg", actions: false, loader: {target: "_self"}})
      .then(function () { block.classList.add("lsi-live"); })
      .catch(function (error) { console.error("lsi chart: " + error); });
  }

  function start() { document.querySelectorAll(".lsi-chart").forEach(draw); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
