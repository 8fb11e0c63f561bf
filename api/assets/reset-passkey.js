// The reset forms' passkey: proves the account's second factor with one of its passkeys
// instead of a typed code. The options come from the api for this link (or this email and
// code); the browser's answer goes with the form, in its hidden `passkey` field, as JSON.
(function () {
  "use strict";
  var button = document.getElementById("reset-passkey");
  var pkc = window.PublicKeyCredential;
  if (!button || !pkc || !pkc.parseRequestOptionsFromJSON) { return; }
  var form = button.form;
  var typed = form.elements.second_factor;
  var status = document.getElementById("passkey-status");
  function say(key) {
    status.textContent = status.dataset[key] || key;
    status.hidden = false;
  }
  function ask() {
    if (form.elements.token) { return { token: form.elements.token.value }; }
    return { email: form.elements.email.value, code: form.elements.code.value };
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    // The passwords must be filled in; the typed code is what the passkey replaces.
    typed.required = false;
    var ready = form.reportValidity();
    typed.required = true;
    if (!ready) { return; }
    status.hidden = true;
    fetch(button.dataset.options, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(ask())
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (json) {
        if (r.status === 409) { say("none"); return; }
        if (r.status !== 200 || !json) { say("failed"); return; }
        var publicKey = pkc.parseRequestOptionsFromJSON(json.options.publicKey);
        return navigator.credentials.get({ publicKey: publicKey }).then(function (credential) {
          form.elements.passkey.value = JSON.stringify({
            ceremony_id: json.ceremony_id,
            credential: credential.toJSON()
          });
          typed.required = false;
          typed.value = "";
          form.submit();
        }, function () { say("cancelled"); });
      });
    }).catch(function () { say("failed"); });
  });
})();
