// Greets the caller. POST a JSON body like {"name": "Ada"} or pass ?name=Ada.
exports.handle = async (req) => {
  let name = req.query.name;
  if (!name && req.body.length > 0) {
    try {
      name = req.json().name;
    } catch (e) {
      name = req.text().trim();
    }
  }
  return { message: `Hello from Node, ${name || "world"}!`, pid: process.pid };
};
