# One-line Rack app for bench/compare.sh's HTTP part (Debian's thin):
#   thin start -R bench/thin/config.ru -a 127.0.0.1 -p PORT -e production
# Content-Length is given because thin keeps a connection alive only when the
# response has one (nginx and packet's http_server send it too).
run ->(_env) { [200, { 'Content-Type' => 'text/plain', 'Content-Length' => '14' }, ["Hello, World!\n"]] }
