# EventMachine echo server for bench/compare.sh: ruby bench/em_echo.rb ADDR PORT
# Debian's ruby-eventmachine (the C++ reactor extension), epoll, TCP_NODELAY
# on every connection like packet and c_echo. SIGTERM/SIGINT stop it.
require 'eventmachine'
require 'socket'

module Echo
  def post_init
    set_sock_opt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1)
  end

  def receive_data(data)
    send_data(data)
  end
end

host = ARGV.fetch(0, '127.0.0.1')
port = Integer(ARGV.fetch(1, '11006'))
EM.epoll
EM.set_descriptor_table_size(4096)
EM.run do
  EM.start_server(host, port, Echo)
  %w[TERM INT].each { |sig| trap(sig) { EM.stop } }
  puts "listening on #{host}:#{port}"
  $stdout.flush
end
