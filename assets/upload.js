// Data page upload: a file input placed in #data-upload-slot sends the chosen file to
// POST /upload as a stream (no base64, no JSON), refuses files over the server's limit
// before sending, and hands the server's answer to the Dash store "upload-result"
// (the server callback checks everything again).
(function () {
  function report(result) {
    if (window.dash_clientside && window.dash_clientside.set_props) {
      window.dash_clientside.set_props("upload-result", {data: Object.assign({t: Date.now()}, result)});
    }
  }

  function send(input, limit) {
    if (!input.files || !input.files.length) {
      return;
    }
    var file = input.files[0];
    input.value = "";
    var mb = function (n) { return Math.round(n / 1048576).toLocaleString(); };
    if (limit && file.size > limit) {
      report({error: file.name + " (" + mb(file.size) + " MB) is larger than the server's upload " +
              "limit of " + mb(limit) + " MB; copy it into the data folder instead"});
      return;
    }
    report({busy: "uploading " + file.name + " (" + mb(file.size) + " MB)…"});
    fetch("/upload", {method: "POST", body: file,
                      headers: {"X-File-Name": encodeURIComponent(file.name),
                                "X-Requested-With": "scmm-upload",
                                "Content-Type": "application/octet-stream"}})
      .then(function (r) {
        return r.json().catch(function () {
          return {error: r.status === 413
            ? file.name + " is larger than the server's upload limit of " + mb(limit) + " MB"
            : "the upload failed (HTTP " + r.status + ")"};
        });
      })
      .then(report)
      .catch(function (err) { report({error: "upload failed: " + err}); });
  }

  function mount() {
    var slot = document.getElementById("data-upload-slot");
    if (!slot || slot.querySelector("input")) {
      return;
    }
    var input = document.createElement("input");
    input.type = "file";
    input.id = "data-upload-input";
    input.accept = ".h5mu,.h5ad,.h5";
    input.className = "form-control form-control-sm";
    var limit = Number(slot.getAttribute("data-max-bytes") || 0);
    input.addEventListener("change", function () { send(input, limit); });
    slot.appendChild(input);
  }

  new MutationObserver(mount).observe(document.documentElement, {childList: true, subtree: true});
})();
