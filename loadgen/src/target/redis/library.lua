#!lua name=ferrogram_loadgen
-- The messenger on Redis, as loadgen's Redis adapter drives it (loadgen/src/target/redis/).
-- Loaded with FUNCTION LOAD REPLACE; every operation is one FCALL.
--
-- Keys: lg:phones (hash phone -> user id), lg:user:U (hash), lg:chat:C (hash: kind, title,
-- creator, last message id), lg:chat:C:members (set), lg:chat:C:admins (set, channels),
-- lg:chat:C:messages (the chat's stream, entry ids 0-N for message id N), lg:user:U:updates
-- (the user's update stream: one entry per new message in its chats), lg:random:U:R (the
-- message id a sender's random_id got, kept 24 hours as ferrogram keeps them), lg:privates
-- (hash "a:b" -> the private chat of users a < b). Pub/Sub channels: lg:user:U (a user's live
-- updates), lg:chat:C (a channel's live posts). Keys are not declared (this is a single
-- instance, not a cluster).

local function chat_key(chat)
  return 'lg:chat:' .. chat
end

-- lg_user(phone, first_name) -> user id: signs the phone up once.
redis.register_function('lg_user', function(_, args)
  local phone, first_name = args[1], args[2]
  local existing = redis.call('HGET', 'lg:phones', phone)
  if existing then
    return tonumber(existing)
  end
  local id = redis.call('INCR', 'lg:next_user')
  redis.call('HSET', 'lg:phones', phone, id)
  redis.call('HSET', 'lg:user:' .. id, 'phone', phone, 'first_name', first_name)
  return id
end)

-- lg_chat(kind, creator, title, others...) -> chat id. kind: private (others = the peer; the
-- pair's existing chat is answered again), group (others = members), channel (others =
-- admins, who may post besides the creator).
redis.register_function('lg_chat', function(_, args)
  local kind, creator, title = args[1], args[2], args[3]
  local pair
  if kind == 'private' then
    local a, b = tonumber(creator), tonumber(args[4])
    pair = math.min(a, b) .. ':' .. math.max(a, b)
    local existing = redis.call('HGET', 'lg:privates', pair)
    if existing then
      return tonumber(existing)
    end
  end
  local id = redis.call('INCR', 'lg:next_chat')
  local key = chat_key(id)
  redis.call('HSET', key, 'kind', kind, 'title', title, 'creator', creator, 'last', 0)
  redis.call('SADD', key .. ':members', creator, unpack(args, 4))
  if kind == 'channel' then
    redis.call('SADD', key .. ':admins', creator, unpack(args, 4))
  end
  if pair then
    redis.call('HSET', 'lg:privates', pair, id)
  end
  return id
end)

-- lg_follow(chat, user): joins a channel (its live posts come through SUBSCRIBE lg:chat:C).
redis.register_function('lg_follow', function(_, args)
  local key = chat_key(args[1])
  if redis.call('HGET', key, 'kind') ~= 'channel' then
    return redis.error_reply('NOT_FOUND no such channel')
  end
  redis.call('SADD', key .. ':members', args[2])
  return 1
end)

-- lg_send(chat, sender, random_id, text) -> {message id, duplicate (0 or 1)}: stores the
-- message in the chat's stream, then fans it out: to every member's update stream and
-- Pub/Sub channel (Redis drops a PUBLISH nobody is subscribed to), or for a channel one
-- PUBLISH to the channel's followers. The sender's own update goes to its stream but is not
-- published: the reply tells the sending device, as ferrogram's answer does (its sending
-- session gets no live copy either).
redis.register_function('lg_send', function(_, args)
  local chat, sender, random_id, text = args[1], args[2], args[3], args[4]
  local key = chat_key(chat)
  local kind = redis.call('HGET', key, 'kind')
  if not kind then
    return redis.error_reply('NOT_FOUND no such chat')
  end
  local allowed = key .. ':members'
  if kind == 'channel' then
    allowed = key .. ':admins'
  end
  if redis.call('SISMEMBER', allowed, sender) == 0 then
    return redis.error_reply('PERMISSION_DENIED not allowed to post here')
  end
  local seen = 'lg:random:' .. sender .. ':' .. random_id
  local earlier = redis.call('GET', seen)
  if earlier then
    return { tonumber(earlier), 1 }
  end
  local id = redis.call('HINCRBY', key, 'last', 1)
  redis.call('XADD', key .. ':messages', '0-' .. id, 'sender', sender, 'random_id', random_id, 'text', text)
  redis.call('SET', seen, id, 'EX', 86400)
  local payload = chat .. ' ' .. id .. ' ' .. sender .. ' ' .. random_id .. ' ' .. text
  if kind == 'channel' then
    redis.call('PUBLISH', key, payload)
  else
    for _, member in ipairs(redis.call('SMEMBERS', key .. ':members')) do
      redis.call('XADD', 'lg:user:' .. member .. ':updates', '*', 'chat', chat, 'message', id)
      if member ~= sender then
        redis.call('PUBLISH', 'lg:user:' .. member, payload)
      end
    end
  end
  return { id, 0 }
end)

-- lg_history(chat, reader, offset, limit) -> up to limit messages below offset (0: the
-- newest), newest first, as XREVRANGE gives them.
redis.register_function {
  function_name = 'lg_history',
  flags = { 'no-writes' },
  callback = function(_, args)
    local key = chat_key(args[1])
    if redis.call('SISMEMBER', key .. ':members', args[2]) == 0 then
      return redis.error_reply('PERMISSION_DENIED not a member')
    end
    local top = '+'
    if args[3] ~= '0' then
      top = '(0-' .. args[3]
    end
    return redis.call('XREVRANGE', key .. ':messages', top, '-', 'COUNT', args[4])
  end,
}
