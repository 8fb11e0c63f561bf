// Removes the one-time token from the address bar (and so from history, bookmarks and
// screenshots) once the page has loaded. The token travels on only in the form's POST body.
(function () {
  if (window.history && window.history.replaceState && window.location.search) {
    window.history.replaceState(null, "", window.location.pathname);
  }
})();
