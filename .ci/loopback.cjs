// Preloaded (NODE_OPTIONS=--require) into npm servers that listen on a port
// alone (server-everything's `app.listen(PORT)`): binds them to 127.0.0.1
// instead of every interface, as everything else in CI.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if ((typeof args[0] === 'number' || /^\d+$/.test(args[0])) && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
