// Joins the "lobby" room over a websocket (daphne behind nginx's /ws/) and reconnects when the server goes away.
(function () {
  const log = document.getElementById("log");
  const form = document.getElementById("chat");
  const input = document.getElementById("text");
  let socket;
  function show(text) {
    const item = document.createElement("li");
    item.textContent = text;
    log.appendChild(item);
  }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(scheme + "://" + location.host + "/ws/chat/lobby/");
    socket.onmessage = function (event) {
      const data = JSON.parse(event.data);
      show(data.type === "message" ? data.text : "connected to " + data.version);
    };
    socket.onclose = function () { setTimeout(connect, 1000); };
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    socket.send(input.value);
    input.value = "";
  });
  connect();
})();
