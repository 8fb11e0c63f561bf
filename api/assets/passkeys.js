// The passkeys page: signing in with a passkey, and adding one to the signed-in account.
// The api speaks WebAuthn's JSON forms (binary values in base64url), which the browser turns
// into its options (parse…FromJSON) and its credentials back into JSON (toJSON).
(function () {
  "use strict";
  var status = document.getElementById("passkey-status");
  function say(key) {
    status.textContent = status.dataset[key] || key;
    status.dataset.state = key;
    status.hidden = false;
  }
  var pkc = window.PublicKeyCredential;
  if (!pkc || !pkc.parseCreationOptionsFromJSON || !pkc.parseRequestOptionsFromJSON) {
    say("unsupported");
    return;
  }
  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (json) {
        return { status: r.status, json: json };
      });
    });
  }
  function showCodes(codes) {
    var list = document.getElementById("recovery-codes");
    list.textContent = "";
    codes.forEach(function (code) {
      var item = document.createElement("li");
      item.textContent = code;
      list.appendChild(item);
    });
    list.hidden = false;
  }
  document.getElementById("passkey-sign-in").addEventListener("click", function () {
    post("/v1/sessions/passkey/options", {}).then(function (options) {
      if (options.status !== 200) { say("failed"); return null; }
      var publicKey = pkc.parseRequestOptionsFromJSON(options.json.options.publicKey);
      return navigator.credentials.get({ publicKey: publicKey }).then(function (credential) {
        return post("/v1/sessions/passkey", {
          ceremony_id: options.json.ceremony_id,
          credential: credential.toJSON()
        });
      }, function () { say("cancelled"); return null; });
    }).then(function (done) {
      if (done) { say(done.status === 201 ? "signedin" : "failed"); }
    }).catch(function () { say("failed"); });
  });
  document.getElementById("passkey-add").addEventListener("submit", function (event) {
    event.preventDefault();
    var password = document.getElementById("passkey-password").value;
    var name = document.getElementById("passkey-name").value;
    // The account's factor, when it has one: six digits are the app's code.
    var factor = document.getElementById("passkey-factor").value.replace(/\s/g, "");
    var body = { password: password };
    if (/^[0-9]{6}$/.test(factor)) { body.code = factor; } else if (factor) { body.recovery_code = factor; }
    post("/v1/mfa/passkeys/options", body).then(function (options) {
      var code = options.json && options.json.code;
      if (options.status === 401 && code === "unauthorized") { say("signin"); return null; }
      if (code === "mfa_required") { say("factor"); return null; }
      if (code === "invalid_code") { say("wrongcode"); return null; }
      if (options.status !== 200) { say("failed"); return null; }
      var publicKey = pkc.parseCreationOptionsFromJSON(options.json.options.publicKey);
      return navigator.credentials.create({ publicKey: publicKey }).then(function (credential) {
        return post("/v1/mfa/passkeys", {
          ceremony_id: options.json.ceremony_id,
          credential: credential.toJSON(),
          name: name
        });
      }, function () { say("cancelled"); return null; });
    }).then(function (done) {
      if (!done) { return; }
      if (done.status !== 201) { say("failed"); return; }
      say("added");
      if (done.json.recovery_codes) { showCodes(done.json.recovery_codes); }
    }).catch(function () { say("failed"); });
  });
})();
