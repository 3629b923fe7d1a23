-- Both audit lists of a workspace (KEYS[1] lifecycle, KEYS[2] repeatable; one slot), read at once.
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('LRANGE', KEYS[2], 0, -1)}
