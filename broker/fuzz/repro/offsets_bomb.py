# Produces one valid-CRC v2 record batch claiming i32::MAX records (and holding none) to
# __consumer_offsets partition 0, then prints the produce response (hex).
# Reproducer (see broker/fuzz/README.md): python3 offsets_bomb.py PORT, then restart the broker.
import socket, struct, sys
def crc32c(data):
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
count = 2**31 - 1
after_crc = struct.pack('>hiqqqhii', 0, count - 1, 0, 0, -1, -1, -1, count)
batch_len = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, rest
batch = struct.pack('>qiib', 0, batch_len, 0, 2) + struct.pack('>I', crc32c(after_crc)) + after_crc
topic = b'__consumer_offsets'
body = struct.pack('>hhi', -1, 1, 30000)
body += struct.pack('>i', 1) + struct.pack('>h', len(topic)) + topic
body += struct.pack('>i', 1) + struct.pack('>i', 0) + struct.pack('>i', len(batch)) + batch
frame = struct.pack('>hhih', 0, 3, 1, -1) + body
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(struct.pack('>i', len(frame)) + frame)
size = struct.unpack('>i', s.recv(4))[0]
resp = b''
while len(resp) < size:
    resp += s.recv(size - len(resp))
# correlation i32, topics array: count i32, name, partitions count, index i32, error i16, base offset i64
print('response', resp.hex())
