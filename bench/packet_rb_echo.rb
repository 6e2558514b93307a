# Echo server on the original Ruby Packet (the gem packet 0.1.15, unmodified)
# for bench/compare.sh: ruby bench/packet_rb_echo.rb ADDR PORT
#
# Packet's own reactor (IO.select) with the handler API this project
# re-creates: a module whose receive_data sends the data back. Packet sets
# TCP_NODELAY on every accepted connection itself (as packet, c_echo and
# em_echo.rb do), and exits on SIGTERM/SIGINT by its own traps.
gem 'packet', '0.1.15'
require 'packet'

module Echo
  def receive_data(data)
    send_data(data)
  end
end

host = ARGV.fetch(0, '127.0.0.1')
port = Integer(ARGV.fetch(1, '11006'))
Packet::Reactor.run do |reactor|
  reactor.start_server(host, port, Echo)
  # start_server has bound and is listening once it returns.
  puts "listening on #{host}:#{port}"
  $stdout.flush
end
