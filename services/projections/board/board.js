// Joinery mission board: refreshes the figures in place.
// Every N seconds (body data-refresh-seconds, from ?refresh=, default 15)
// fetch this page again, swap in its #figures block when it changed, and
// announce the update in a polite live region. Without JavaScript the page
// is complete and a note asks the reader to reload it.
(function () {
  'use strict';
  var figures = document.getElementById('figures');
  var status = document.getElementById('refresh-status');
  if (!figures || !window.fetch || !window.DOMParser) return;
  var seconds = parseInt(document.body.getAttribute('data-refresh-seconds'), 10) || 15;
  status.textContent = 'Figures refresh every ' + seconds + ' seconds.';
  function refresh() {
    fetch(window.location.href, { headers: { Accept: 'text/html' }, cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, 'text/html').getElementById('figures');
        if (next && next.innerHTML !== figures.innerHTML) {
          // Keep keyboard focus on the same link or element across the swap.
          var active = document.activeElement;
          var inside = active && figures.contains(active);
          var href = inside ? active.getAttribute('href') : null;
          var id = inside ? active.id : null;
          figures.innerHTML = next.innerHTML;
          var again = (href && figures.querySelector('[href="' + CSS.escape(href) + '"]')) ||
            (id && document.getElementById(id));
          if (again) again.focus({ preventScroll: true });
          status.textContent = 'Figures updated at ' + new Date().toLocaleTimeString('en-GB') + '.';
        }
      })
      .catch(function () {
        status.textContent = 'Could not refresh the figures; trying again in ' + seconds + ' seconds.';
      })
      .then(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  window.setTimeout(refresh, seconds * 1000);
})();
